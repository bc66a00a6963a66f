"""Fixtures shared by every test package. Servers start as plain processes on loopback,
ports read back from the sockets; helpers (waiting on conditions, the async runner, fake
HTTP destinations) live in tests/helpers.py."""

from __future__ import annotations

from .clickhouse_server import clickhouse  # noqa: F401 - a ClickHouse 18.16 server per test that asks
