"""A real syslog-ng (Debian's syslog-ng-core) on loopback, as a receiver for the syslog sink
tests: started in the foreground with its own config, pid, persist and control files under
a temp directory (no system paths), RFC 5424 sources over TCP and TLS (client certificate
required), writing every message to a file as ``HOST\\tPROGRAM\\tPID\\tMSGID\\tPRI\\tISODATE\\tSDATA\\tMSG``.

Also: ``make_certificates(dir)``, a CA with a server and a client certificate (openssl CLI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from .helpers import free_port, stop_process, wait_until

__all__ = ["SyslogNg", "syslog_ng_bin", "make_certificates"]

SD_ID = "logpipe@32473"


def syslog_ng_bin() -> str | None:
    return shutil.which("syslog-ng") or (os.path.exists("/usr/sbin/syslog-ng") and "/usr/sbin/syslog-ng") or None


def make_certificates(directory: str) -> dict[str, str]:
    """CA, server (CN/SAN 127.0.0.1, localhost) and client certificates; returns their paths."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=logpipe test CA")
    ext = os.path.join(directory, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'127.0.0.1' if name == 'server' else 'logpipe client'}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", ext)
    return {k: os.path.join(directory, v) for k, v in {
        "ca": "ca.crt", "server_cert": "server.crt", "server_key": "server.key",
        "client_cert": "client.crt", "client_key": "client.key"}.items()}


class SyslogNg:
    def __init__(self, binary: str, workdir: str, certs: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.certs = certs
        self.output = os.path.join(workdir, "received.log")
        self.proc: subprocess.Popen | None = None
        self.tcp_port = 0
        self.tls_port = 0

    def _config(self) -> str:
        template = '"${HOST}\\t${PROGRAM}\\t${PID}\\t${MSGID}\\t${PRI}\\t${ISODATE}\\t${SDATA}\\t${MSG}\\n"'
        sources = f'syslog(ip("127.0.0.1") port({self.tcp_port}) transport("tcp") flags(no-multi-line));'
        if self.certs:
            c = self.certs
            sources += (
                f' syslog(ip("127.0.0.1") port({self.tls_port}) transport("tls") flags(no-multi-line)'
                f' tls(key-file("{c["server_key"]}") cert-file("{c["server_cert"]}") ca-file("{c["ca"]}")'
                f' peer-verify(required-trusted)));'
            )
        return (
            "@version: 3.38\n"
            "options { keep-hostname(yes); use-dns(no); use-fqdn(no); chain-hostnames(no); stats-freq(0); "
            "log-msg-size(262144); flush-lines(0); };\n"
            f"source s_in {{ {sources} }};\n"
            f'destination d_file {{ file("{self.output}" template({template}) template-escape(no)); }};\n'
            "log { source(s_in); destination(d_file); };\n"
        )

    def start(self, same_ports: bool = False) -> None:
        for _attempt in range(1 if same_ports else 5):
            if not same_ports:
                self.tcp_port, self.tls_port = free_port(), free_port()
            config = os.path.join(self.workdir, "syslog-ng.conf")
            with open(config, "w") as f:
                f.write(self._config())
            with open(os.path.join(self.workdir, "syslog-ng.stderr"), "wb") as stderr:
                self.proc = subprocess.Popen(
                    [self.binary, "-F", "-f", config, f"--pidfile={self.workdir}/syslog-ng.pid",
                     f"--persist-file={self.workdir}/syslog-ng.persist", f"--control={self.workdir}/syslog-ng.ctl",
                     "--no-caps"],
                    stdout=subprocess.DEVNULL, stderr=stderr,
                )
            ports = [self.tcp_port] + ([self.tls_port] if self.certs else [])

            def listening(ports: list[int] = ports) -> bool:
                if self.proc.poll() is not None:
                    return True
                return all(_accepts(port) for port in ports)

            wait_until(listening, timeout=20, what="syslog-ng listening")
            if self.proc.poll() is None:
                return
        with open(os.path.join(self.workdir, "syslog-ng.stderr")) as f:
            raise AssertionError(f"syslog-ng did not start: {f.read()[-2000:]}")

    def lines(self) -> list[list[str]]:
        if not os.path.exists(self.output):
            return []
        with open(self.output, encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t", 7) for line in f if line.endswith("\n")]

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
