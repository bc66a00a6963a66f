"""Fixtures shared by every test package. Servers start as plain processes on loopback,
ports read back from the sockets; helpers (waiting on conditions, the async runner, fake
HTTP destinations) live in tests/helpers.py."""

from __future__ import annotations

import pytest
import structlog

from .clickhouse_server import clickhouse  # noqa: F401 - a ClickHouse 18.16 server per test that asks
from .nats_server import nats_cluster, nats_server  # noqa: F401 - nats-server with JetStream: one node, three


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """A test that configures logging (a reload of log_level, the CLI in-process) must not
    change where the next test's logs go."""
    yield
    structlog.reset_defaults()
