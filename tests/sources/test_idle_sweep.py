"""The TCP idle sweep (``idle_timeout_s``) runs only while connections are open: a daemon
with no connections has no sweep timer waking its loop. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

from logpipe.config import SyslogSource
from logpipe.metrics import Metrics
from logpipe.sources.flow import FlowControl
from logpipe.sources.syslog import SyslogListeners

from ..helpers import await_until, run_async


class RecordingPipeline:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def ingest(self, events: list[dict], holdable: bool) -> None:
        self.events += events


def test_the_sweep_is_armed_only_while_connections_are_open():
    async def scenario():
        pipeline = RecordingPipeline()
        listeners = SyslogListeners("syslog", SyslogSource(tcp="127.0.0.1:0", idle_timeout_s=1), pipeline,  # type: ignore[arg-type]
                                    FlowControl(), Metrics())
        await listeners.start()
        try:
            assert listeners._idle_timer is None  # listening, nobody connected: nothing scheduled
            reader, writer = await asyncio.open_connection(*listeners.addresses["tcp"])
            writer.write(b"<14>Nov 21 10:00:00 h app: one\n")
            await writer.drain()
            await await_until(lambda: pipeline.events, 5, "the line")
            assert listeners._idle_timer is not None
            # silent for idle_timeout_s: the sweep closes it, and with nobody left stops itself
            assert await asyncio.wait_for(reader.read(), 5) == b""
            await await_until(lambda: not listeners.connections and listeners._idle_timer is None, 5, "the sweep to stop")
            writer.close()
            # a new connection arms it again
            _reader2, writer2 = await asyncio.open_connection(*listeners.addresses["tcp"])
            await await_until(lambda: listeners._idle_timer is not None, 5, "the sweep to be armed")
            writer2.close()
        finally:
            await listeners.stop()
        assert listeners._idle_timer is None

    run_async(scenario, 30)
