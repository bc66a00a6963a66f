"""A real clickhouse-server (Debian's package) as a plain child process, for tests.

Started on 127.0.0.1 with both ports set to 0: the kernel picks free ones (no "find a free
port" race), and the HTTP port is read back from /proc (the listening sockets the process
owns, then GET /ping on each). Temp config, users and data dir; readiness is a bounded
poll; stop is SIGTERM (then SIGKILL) to the PID we started. ``restart()`` keeps the data
and the port. keep_alive_timeout is 1 s: a graceful stop waits for idle keep-alive
connections (10 s by default on 18.16).

The ``clickhouse`` fixture is registered for every test in tests/conftest.py.
Tests skip with a reason when clickhouse-server is not installed (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from .helpers import wait_until as wait_for

__all__ = ["ClickHouseServer", "clickhouse", "wait_for", "BINARY"]

BINARY = shutil.which("clickhouse-server") or ("/usr/sbin/clickhouse-server" if os.path.exists("/usr/sbin/clickhouse-server") else None)
USER = "writer"
PASSWORD = "s3cret-pw"

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/server.err.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>0</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <keep_alive_timeout>1</keep_alive_timeout>
</yandex>
"""
_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <{user}><password>{password}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></{user}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""




def _listening_ports(pid: int) -> list[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    ports = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A = LISTEN
                ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


class ClickHouseServer:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.http_port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> None:
        assert BINARY is not None
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        with open(os.path.join(self.directory, "config.xml"), "w") as f:
            f.write(_CONFIG.format(dir=self.directory, http_port=self.http_port))
        with open(os.path.join(self.directory, "users.xml"), "w") as f:
            f.write(_USERS.format(user=USER, password=PASSWORD))
        with open(os.path.join(self.directory, "stderr.log"), "ab") as stderr:
            self.process = subprocess.Popen(
                [BINARY, f"--config-file={self.directory}/config.xml"], cwd=self.directory, stdout=subprocess.DEVNULL, stderr=stderr
            )
        wait_for(self._ready, timeout, "clickhouse-server to answer /ping")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = ""
            for name in ("stderr.log", "server.err.log"):
                path = os.path.join(self.directory, name)
                if os.path.exists(path):
                    log += open(path, errors="replace").read()[-2000:]
            raise RuntimeError(f"clickhouse-server exited with {self.process.returncode}: {log}")
        ports = [self.http_port] if self.http_port else _listening_ports(self.process.pid)
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
                    if resp.read().strip() == b"Ok.":
                        self.http_port = port
                        return True
            except (OSError, urllib.error.URLError):
                continue
        return False

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    @property
    def tcp_port(self) -> int:
        """The native-protocol port the kernel picked (Distributed tables connect to it)."""
        assert self.process is not None
        ports = [p for p in _listening_ports(self.process.pid) if p != self.http_port]
        assert len(ports) == 1, ports
        return ports[0]

    def add_config(self, name: str, xml_body: str) -> None:
        """A config.d file; the server merges it in on its next config check (a few
        seconds), so wait for its effect (e.g. the cluster in system.clusters)."""
        os.makedirs(os.path.join(self.directory, "config.d"), exist_ok=True)
        with open(os.path.join(self.directory, "config.d", f"{name}.xml"), "w") as f:
            f.write(f'<?xml version="1.0"?>\n<yandex>\n{xml_body}\n</yandex>\n')

    def restart(self) -> None:
        """Start again on the same port, with the same data."""
        self.start()

    def query(self, sql: str, *, data: bytes | None = None) -> str:
        """Run SQL as the default user; raises RuntimeError with the server's message."""
        from urllib.parse import urlencode

        url = f"{self.url}/"
        body = sql.encode()
        if data is not None:
            url += "?" + urlencode({"query": sql})
            body = data
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode(errors="replace")) from None


@pytest.fixture
def clickhouse(tmp_path):
    """A fresh clickhouse-server with an empty data dir; yields a ClickHouseServer."""
    if BINARY is None:
        pytest.skip("clickhouse-server is not installed (apt-get install clickhouse-server; .ci/run does)")
    server = ClickHouseServer(str(tmp_path / "clickhouse"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
