"""logpipe_udp_kernel_drops_total counts the UDP listener's own drops, also when a TCP
listener is configured next to it (regression: the metric read the TCP socket's inode)."""

import socket

from ..helpers import DaemonProcess, daemon_config, wait_until


def proc_drops(port: int) -> int:
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == f"0100007F:{port:04X}":
                return int(cols[12])
    return -1


def test_kernel_drops_metric_matches_proc_with_tcp_listener_too(tmp_path):
    daemon = DaemonProcess(str(tmp_path), daemon_config(f"{tmp_path}/data", """
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
udp_receive_buffer_bytes = 4096
[sinks.out]
type = "file"
path = "events"
""", log_format="json"))
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20000):  # far more than a 4 KiB buffer holds between two reads
            sender.sendto(b"<13>Nov 21 10:00:00 host app: a line to overflow the buffer", daemon.udp)
        sender.close()
        dropped = proc_drops(daemon.udp[1])
        assert dropped > 0
        wait_until(lambda: daemon.metric("logpipe_udp_kernel_drops_total", "source=syslog") == proc_drops(daemon.udp[1]),
                   10, "the metric to match /proc/net/udp")
    finally:
        daemon.stop()
