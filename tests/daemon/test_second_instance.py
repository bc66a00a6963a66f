"""Two daemons with one config: the second refuses to start, naming what is taken, instead of
silently sharing the UDP port (SO_REUSEADDR) or the data_dir (disk buffers, snapshot)."""

from __future__ import annotations

import socket

import pytest

from logpipe.config import loads
from logpipe.daemon.app import Daemon
from logpipe.daemon.preflight import StartError
from logpipe.sources.base import BindError

from ..helpers import run_async, running


def config_text(data_dir: str, udp: str) -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"
[api]
enabled = false
[sources.syslog]
udp = "{udp}"
[sinks.f]
type = "file"
"""


def test_a_second_daemon_with_the_same_udp_port_refuses_to_start(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = loads(config_text(str(tmp_path / "a"), f"127.0.0.1:{port}"))
    second = loads(config_text(str(tmp_path / "b"), f"127.0.0.1:{port}"))

    async def scenario():
        async with running(first):
            other = Daemon(second)
            with pytest.raises(BindError, match=rf"sources\.syslog\.udp: cannot bind 127\.0\.0\.1:{port}: Address already in use"):
                await other.start()
            await other.shutdown()

    run_async(scenario, timeout=30)


def test_a_second_daemon_with_the_same_data_dir_refuses_to_start(tmp_path):
    config = loads(config_text(str(tmp_path), "127.0.0.1:0"))

    async def scenario():
        async with running(config):
            other = Daemon(config)
            with pytest.raises(StartError, match=r"daemon\.data_dir: .* is in use by another logpipe \(pid \d+\)"):
                await other.start()
            await other.shutdown()
        # released at stop: a restart takes it
        again = Daemon(config)
        await again.start()
        await again.shutdown()

    run_async(scenario, timeout=30)


def test_validate_names_an_unset_secret_env_an_unreadable_tls_file_and_an_unwritable_data_dir(tmp_path):
    from logpipe.daemon.preflight import environment_problems

    text = f"""
[daemon]
data_dir = "/proc/logpipe-cannot-be-here"
[sources.meta]
type = "metadata"
udp = "127.0.0.1:0"
secret_env = "LOGPIPE_TEST_SURELY_UNSET"
[sources.tls]
type = "syslog"
tcp = "127.0.0.1:0"
tls = {{ cert = "{tmp_path}/missing.pem", key = "{tmp_path}/missing.key" }}
[sinks.f]
type = "file"
"""
    problems = environment_problems(loads(text))
    assert "sources.meta.secret_env: environment variable LOGPIPE_TEST_SURELY_UNSET is not set" in problems
    assert f"sources.tls.tls.cert: cannot read {tmp_path}/missing.pem: No such file or directory" in problems
    assert f"sources.tls.tls.key: cannot read {tmp_path}/missing.key: No such file or directory" in problems
    assert any(p.startswith("daemon.data_dir: /proc") for p in problems), problems


def test_a_stop_counts_and_logs_what_clients_sent_that_it_never_read(tmp_path):
    config = loads(config_text(str(tmp_path), "127.0.0.1:0").replace('udp = "127.0.0.1:0"', 'tcp = "127.0.0.1:0"'))

    async def scenario():
        import asyncio

        daemon = Daemon(config)
        await daemon.start()
        source = daemon.syslog
        daemon.graph.flow.set_full("f", True)  # as if the sink's buffer were full: reading pauses
        _, writer = await asyncio.open_connection(*source.addresses["tcp"])
        writer.write(b"<14>Nov 21 10:00:00 h app: unread line\n" * 2000)
        await writer.drain()
        from ..helpers import await_until

        await await_until(lambda: any(c.unread_bytes() for c in source.connections), what="bytes waiting in the kernel")
        await source.stop(quiet_s=0, grace_s=0)  # no grace: what the kernel holds stays unread
        unread = daemon.metrics.get("logpipe_unread_bytes_at_shutdown_total").value("syslog")
        writer.close()
        await daemon.shutdown()
        return unread

    unread = run_async(scenario, timeout=30)
    assert 0 < unread <= 2000 * len(b"<14>Nov 21 10:00:00 h app: unread line\n")
