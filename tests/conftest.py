"""Fixtures shared by every test package. Servers start as plain processes on loopback,
ports read back from the sockets; helpers (waiting on conditions, the async runner, fake
HTTP destinations) live in tests/helpers.py."""

from __future__ import annotations

import faulthandler
import sys

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


# No test takes a minute; one that hangs (a loop that never closes, a stop that waits on a
# swallowed cancel) must fail the run with every thread's stack, not stall CI until its own
# timeout with nothing to show.
HANG_S = 180


@pytest.fixture(autouse=True)
def _fail_a_hang():
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
