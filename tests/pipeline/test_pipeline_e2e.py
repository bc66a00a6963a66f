"""The whole path with real parts: the daemon as a process, real senders (util-linux
`logger`, Python's SysLogHandler, raw sockets bound to 127.0.0.5 to play a container),
real announcements over UDP, and a real store: the file sink always, and a real
VictoriaLogs when LOGPIPE_VICTORIALOGS_BIN points at one.

What it promises: every line is stored exactly once, with the syslog fields of its line
and the labels of the container it came from; a line from a host nobody announced is
stored untagged.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import uuid

import orjson
import pytest

from ..helpers import DaemonProcess, VictoriaLogsServer, daemon_config, victorialogs_bin, wait_until

HOSTNAME = socket.gethostname()  # what `logger` puts in its header
CONTAINER_A = "a1b2c3d4e5f6" + "0" * 52  # announced from 127.0.0.5, joined by source ip
CONTAINER_B = "b1b2c3d4e5f6" + "1" * 52  # announced with a hostname, joined by hostname
NEEDS_LOGGER = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux `logger` is not installed")
VL_BIN = victorialogs_bin()


def store_config(data_dir: str, sink: str) -> str:
    return daemon_config(data_dir, f"""
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"

[sources.metadata]
udp = "127.0.0.1:0"

[enrich]
match_on = ["source_ip=ip", "hostname=hostname", "hostname=container_id", "app_name=container_id"]
hold_ms = 0

[sinks.store]
{sink}
batch = {{ max_events = 1000, max_age_ms = 100 }}
""", log_format="json", shutdown_timeout_s=10)


def send_udp(address, payload: bytes, bind: str | None = None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if bind:
            sock.bind((bind, 0))
        sock.sendto(payload, address)


def send_tcp(address, payload: bytes, bind: str | None = None) -> None:
    with socket.create_connection(address, timeout=10, source_address=(bind, 0) if bind else None) as sock:
        sock.sendall(payload)


def octet(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


@pytest.fixture(params=["file", pytest.param("victorialogs", marks=pytest.mark.victorialogs)])
def store(request, tmp_path):
    """(sink TOML, fetch(run_id) -> stored events) for each real store."""
    if request.param == "file":
        path = tmp_path / "out"

        def fetch(run_id: str) -> list[dict]:
            events = []
            for name in sorted(os.listdir(tmp_path)):
                if name.startswith("out") and name.endswith(".ndjson"):
                    events += [json.loads(x) for x in (tmp_path / name).read_bytes().splitlines() if x]
            return [e for e in events if run_id in e.get("_msg", "")]

        yield f'type = "file"\npath = "{path}"', fetch
        return
    if VL_BIN is None:
        pytest.skip("set LOGPIPE_VICTORIALOGS_BIN to a VictoriaLogs binary to run against the real server")
    server = VictoriaLogsServer(VL_BIN, str(tmp_path / "vl"))
    server.start()
    try:
        yield (
            f'type = "victorialogs"\nurl = "{server.url}"\nstream_fields = ["service", "container_id"]',
            lambda run_id: server.query(f'"{run_id}"'),
        )
    finally:
        server.stop()


@NEEDS_LOGGER
def test_real_senders_stored_once_with_container_labels(tmp_path, store):
    sink_toml, fetch = store
    daemon = DaemonProcess(str(tmp_path), store_config(str(tmp_path / "data"), sink_toml))
    try:
        send_udp(daemon.metadata, orjson.dumps({"container_id": CONTAINER_A, "service": "api", "service_id": "svc-1"}), bind="127.0.0.5")
        send_udp(
            daemon.metadata,
            orjson.dumps({"ip": "", "hostname": HOSTNAME, "container_id": CONTAINER_B, "service": "worker", "service_id": "svc-2"}),
        )
        wait_until(lambda: daemon.metric("logpipe_metadata_entries", "_") == 2, 10, "both announcements")

        run = uuid.uuid4().hex[:12]
        tcp, udp = daemon.tcp, daemon.udp
        # Container A: an RFC 5424 line over TCP (octet-counted) and an RFC 3164 line over UDP,
        # both from 127.0.0.5.
        send_tcp(tcp, octet(f'<134>1 2026-11-20T10:00:00.123456Z api-1 api 42 REQ [req@32473 id="7"] {run} a-tcp'.encode()), bind="127.0.0.5")
        send_udp(udp, f"<11>Nov 20 10:00:01 api-1 api[7]: {run} a-udp".encode(), bind="127.0.0.5")
        # Container B: util-linux logger over UDP and over TCP (octet counting), hostname = ours.
        for transport, flags in (("udp", ["-d"]), ("tcp", ["-T", "--octet-count"])):
            port = (udp if transport == "udp" else tcp)[1]
            subprocess.run(
                ["logger", "--rfc5424", "-n", "127.0.0.1", "-P", str(port), *flags, "-t", "worker-app", "-p", "local0.warning",
                 f"{run} b-logger-{transport}"],
                check=True, timeout=10,
            )
        # Python's SysLogHandler over TCP (NUL-terminated): no hostname, from 127.0.0.1.
        handler = logging.handlers.SysLogHandler(address=tcp, socktype=socket.SOCK_STREAM)
        handler.emit(logging.LogRecord("app", logging.ERROR, __file__, 1, f"{run} handler-tcp", None, None))
        handler.close()
        # A host nobody announced.
        send_tcp(tcp, f"<13>1 - stranger app - - - {run} stranger\n".encode())

        expected = {"a-tcp", "a-udp", "b-logger-udp", "b-logger-tcp", "handler-tcp", "stranger"}
        wait_until(lambda: daemon.metric("logpipe_sent_events_total", "sink=store") >= len(expected), 20, "delivery")
        stored = wait_until(lambda: (lambda ev: ev if len(ev) >= len(expected) else None)(fetch(run)), 20, "stored events")
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()

    by_tag = {}
    for event in stored:
        tag = event["_msg"].split(f"{run} ", 1)[1]
        assert tag not in by_tag, f"{tag} stored twice"
        by_tag[tag] = event
    assert set(by_tag) == expected

    a_tcp = by_tag["a-tcp"]
    assert a_tcp["_msg"] == f"{run} a-tcp"
    assert a_tcp["_time"].startswith("2026-11-20T10:00:00.123456")
    assert (a_tcp["hostname"], a_tcp["app_name"], a_tcp["proc_id"], a_tcp["msg_id"]) == ("api-1", "api", "42", "REQ")
    assert (a_tcp["facility"], a_tcp["severity"], a_tcp["level"]) == ("local0", "info", "info")
    assert a_tcp["req@32473.id"] == "7"
    assert a_tcp["source_ip"] == "127.0.0.5"
    assert (a_tcp["service"], a_tcp["service_id"], a_tcp["container_id"]) == ("api", "svc-1", CONTAINER_A)

    a_udp = by_tag["a-udp"]
    assert (a_udp["service"], a_udp["source_ip"], a_udp["app_name"], a_udp["proc_id"]) == ("api", "127.0.0.5", "api", "7")
    assert (a_udp["facility"], a_udp["severity"], a_udp["level"]) == ("user", "err", "error")

    for tag in ("b-logger-udp", "b-logger-tcp"):
        event = by_tag[tag]
        assert (event["service"], event["service_id"], event["container_id"]) == ("worker", "svc-2", CONTAINER_B)
        assert (event["hostname"], event["app_name"], event["severity"], event["level"]) == (HOSTNAME, "worker-app", "warning", "warn")
        assert event["source_ip"] == "127.0.0.1"

    for tag in ("handler-tcp", "stranger"):
        event = by_tag[tag]
        assert "service" not in event and "container_id" not in event, event
        assert event["source_ip"] == "127.0.0.1"
    assert by_tag["stranger"]["hostname"] == "stranger"
