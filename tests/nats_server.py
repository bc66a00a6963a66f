"""Real nats-server processes (Debian's package) with JetStream, on loopback, for tests.

``NatsServer``: one node, ``-js -sd DIR -a 127.0.0.1 -p PORT``; a first start uses port -1
(the server picks a free one) and reads it back from its ports file; ``restart()`` keeps
the port and the store dir (an outage, then the same server back). ``NatsCluster``: three
nodes routed on loopback (cluster ports from ``free_port``: routes must be known up front),
ready once JetStream answers on every node. Readiness is a bounded poll of the monitoring
``/healthz``; stop is SIGTERM (then SIGKILL) to the PID we started, ``kill()`` SIGKILL.

Fixtures: ``nats_server`` and ``nats_cluster``; tests skip with a reason when nats-server is
not installed (``apt-get install nats-server``; .ci/run does).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from .helpers import free_port, stop_process, wait_until

__all__ = ["NatsServer", "NatsCluster", "nats_server", "nats_cluster", "BINARY"]

BINARY = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


class NatsServer:
    def __init__(self, directory: str, name: str = "n1", cluster: str | None = None) -> None:
        self.directory = directory
        self.name = name
        self.cluster = cluster  # "listen_port:route_url,route_url" for a cluster node
        self.port = -1
        self.monitor_port = -1
        self.proc: subprocess.Popen | None = None
        os.makedirs(directory, exist_ok=True)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        for old in glob.glob(os.path.join(self.directory, "*.ports")):
            os.remove(old)
        args = [BINARY, "-js", "-sd", os.path.join(self.directory, "store"), "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "-n", self.name, "--ports_file_dir", self.directory]
        if self.cluster:
            listen, routes = self.cluster.split(":", 1)
            args += ["--cluster_name", "logpipe-test", "--cluster", f"nats://127.0.0.1:{listen}", "--routes", routes]
        with open(os.path.join(self.directory, "server.log"), "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        ports = wait_until(self._ports, 15, f"nats-server {self.name} ports file")
        self.port = int(ports["nats"][0].rpartition(":")[2])
        self.monitor_port = int(ports["monitoring"][0].rpartition(":")[2])
        if wait:
            self.wait_ready()

    def _ports(self) -> dict | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"nats-server {self.name} exited with {self.proc.returncode}: {self.log_tail()}")
        for path in glob.glob(os.path.join(self.directory, f"*_{self.proc.pid}.ports")):
            try:
                with open(path) as f:
                    return json.load(f)
            except ValueError:  # being written
                return None
        return None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(self.healthy, timeout, f"nats-server {self.name} /healthz (JetStream ready)")

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "server.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsCluster:
    def __init__(self, directory: str, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = [NatsServer(os.path.join(directory, f"n{i + 1}"), f"n{i + 1}", f"{cluster_ports[i]}:{routes}")
                      for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(45)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _require_binary() -> None:
    if BINARY is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server; .ci/run does)")


@pytest.fixture
def nats_server(tmp_path):
    """One fresh nats-server with JetStream; yields a NatsServer."""
    _require_binary()
    server = NatsServer(str(tmp_path / "nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three nats-server nodes in one JetStream cluster; yields a NatsCluster."""
    _require_binary()
    cluster = NatsCluster(str(tmp_path / "nats-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
