"""The example config/clickhouse-http.toml end to end: the daemon as a subprocess, the sample
lines over TCP, a real clickhouse-server (Debian's 18.16). Health checks must be absent,
access lines typed in `http`, app lines in `app`, no secret stored. Marked ``clickhouse``;
skipped when the server is not installed."""

from __future__ import annotations

import pathlib
import re
import socket

import orjson
import pytest

from tests.clickhouse_server import PASSWORD, USER
from tests.helpers import DaemonProcess, wait_until

pytestmark = pytest.mark.clickhouse
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def rows(server, sql: str) -> list[dict]:
    return [orjson.loads(line) for line in server.query(sql + " FORMAT JSONEachRow").splitlines() if line]


def example_config(url: str, data_dir: str) -> str:
    text = (ROOT / "config" / "clickhouse-http.toml").read_text()
    text = text.replace('data_dir = "./data"', f'data_dir = "{data_dir}"\nlog_format = "json"\n\n[api]\nlisten = "127.0.0.1:0"')
    text = text.replace('udp = "127.0.0.1:5514"\ntcp = "127.0.0.1:5514"', 'tcp = "127.0.0.1:0"')
    text = re.sub(r'\[sources\.metadata\]\nudp = "[^"]+"\n', "", text)
    text = text.replace('url = "http://127.0.0.1:8123"', f'url = "{url}"\nuser = "{USER}"\npassword = "{PASSWORD}"\ncreate_table = true\nmin_insert_interval_ms = 0')
    text = text.replace("max_age_ms = 5000", "max_age_ms = 200")
    return text


def test_example_config_stores_typed_redacted_rows_in_two_tables(clickhouse, tmp_path):
    daemon = DaemonProcess(str(tmp_path), example_config(clickhouse.url, str(tmp_path / "data")))
    try:
        with socket.create_connection(daemon.tcp, timeout=10) as conn:
            conn.sendall((ROOT / "docs" / "sample-lines.log").read_bytes())

        def counts():
            try:
                return (int(clickhouse.query("SELECT count() FROM logs.http")), int(clickhouse.query("SELECT count() FROM logs.app")))
            except Exception:  # tables not created yet
                return None

        wait_until(lambda: counts() == (2, 3), 30, "2 http rows and 3 app rows")
    finally:
        daemon.stop()
    http = rows(clickhouse, "SELECT client_ip, method, path, status, bytes, duration_s, service FROM logs.http ORDER BY client_ip")
    assert http == [
        {"client_ip": "203.0.113.7", "method": "POST", "path": "/api/login?token=[REDACTED]", "status": 401,
         "bytes": "53", "duration_s": 0.012, "service": "nginx"},
        {"client_ip": "203.0.113.8", "method": "GET", "path": "/orders/1842", "status": 200,
         "bytes": "0", "duration_s": 0.087, "service": "nginx"},
    ]
    app = rows(clickhouse, "SELECT level, order_id, retries, msg FROM logs.app ORDER BY ts")
    assert [(r["level"], r["order_id"]) for r in app] == [("warn", "1842"), ("error", "1843"), ("info", None)]
    assert app[0]["retries"] is None  # "two" did not convert: removed, so NULL
    everything = clickhouse.query("SELECT * FROM logs.http FORMAT TSV") + clickhouse.query("SELECT * FROM logs.app FORMAT TSV")
    for secret in ("bob@example.com", "4111 1111", "s3cret", "eyJhbGci", "abc123", "healthz"):
        assert secret not in everything
