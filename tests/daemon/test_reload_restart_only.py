"""Reload answers truthfully: settings only a restart applies are refused by name (nothing
else of that reload is applied), log settings apply at once, and ``[api] enabled = false``
serves nothing."""

from __future__ import annotations

import pytest

from logpipe.config import loads

from ..helpers import run_async, running

BASE = """
[daemon]
data_dir = "{data_dir}"
workers = 1
log_level = "info"
[api]
listen = "127.0.0.1:0"
[sources.syslog]
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
rate_per_s = 100
[sinks.f]
type = "file"
concurrency = 1
"""


@pytest.mark.parametrize(
    "old, new, problem",
    [
        pytest.param("workers = 1", "workers = 2", "daemon.workers: changing it needs a restart", id="workers"),
        pytest.param("concurrency = 1", "concurrency = 2", "sinks.f.concurrency: changing it needs a restart", id="concurrency"),
        pytest.param("rate_per_s = 100", "rate_per_s = 5", "sources.metadata.rate_per_s: changing it needs a restart",
                     id="metadata-rate"),
    ],
)
def test_reload_refuses_each_restart_only_setting_by_name(tmp_path, old, new, problem):
    text = BASE.format(data_dir=tmp_path)
    config = loads(text)

    async def scenario():
        async with running(config) as daemon:
            changed = text.replace(old, new) + '\n[sinks.extra]\ntype = "file"\npath = "extra"\n'
            assert await daemon.reload(loads(changed)) == [problem]
            assert list(daemon.sinks) == ["f"]  # nothing of the refused reload applied
            assert daemon.metrics.get("logpipe_reloads_total").value("refused") == 1

    run_async(scenario, timeout=30)


def test_reload_applies_log_level_at_once(tmp_path):
    import logging

    import structlog

    def debug_on() -> bool:
        return structlog.get_logger().bind().is_enabled_for(logging.DEBUG)

    text = BASE.format(data_dir=tmp_path)

    async def scenario():
        async with running(loads(text)) as daemon:
            assert await daemon.reload(loads(text.replace('log_level = "info"', 'log_level = "debug"'))) == []
            assert debug_on()
            assert await daemon.reload(loads(text)) == []
            assert not debug_on()

    run_async(scenario, timeout=30)


def test_api_enabled_false_serves_nothing(tmp_path):
    text = BASE.format(data_dir=tmp_path).replace('[api]\nlisten = "127.0.0.1:0"', "[api]\nenabled = false")

    async def scenario():
        async with running(loads(text)) as daemon:
            assert daemon.api is None and daemon.api_address is None
            assert "api" not in str(daemon.stats()["listeners"])

    run_async(scenario, timeout=30)
