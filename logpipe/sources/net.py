"""Socket helpers shared by the sources: CIDR allow lists, UDP sockets with a sized receive
buffer, and the kernel's own count of UDP datagrams it dropped for a socket."""

from __future__ import annotations

import ipaddress
import os
import socket

from ..config import parse_address

__all__ = ["AllowList", "udp_socket", "tcp_socket", "udp_kernel_drops"]


class AllowList:
    """``allowed(ip)`` for a list of CIDRs, with a bounded per-address memo so the check
    costs one dict lookup per datagram or connection."""

    _MEMO_LIMIT = 65536

    def __init__(self, cidrs: list[str]) -> None:
        self._networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.allows_all = any(n.prefixlen == 0 and n.version == 4 for n in self._networks) and any(
            n.prefixlen == 0 and n.version == 6 for n in self._networks
        )
        self._memo: dict[str, bool] = {}

    def allowed(self, ip: str) -> bool:
        if self.allows_all:
            return True
        verdict = self._memo.get(ip)
        if verdict is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            verdict = any(addr in n for n in self._networks)
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            self._memo[ip] = verdict
        return verdict


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_socket(address: str, receive_buffer_bytes: int | None = None, reuse_port: bool = False) -> socket.socket:
    host, port = parse_address(address)
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    # No SO_REUSEADDR: on UDP it lets a second daemon bind the same port and silently take
    # the datagrams. Workers of one supervisor share ports through SO_REUSEPORT instead.
    if reuse_port:  # daemon.workers > 1: the kernel spreads flows over the workers' sockets
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if receive_buffer_bytes:
        # Bursts arrive faster than one event-loop turn drains them. SO_RCVBUF is capped
        # at net.core.rmem_max (the README says how to raise it); SO_RCVBUFFORCE is not,
        # but needs CAP_NET_ADMIN (root in a container), so it is tried first.
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), receive_buffer_bytes)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def tcp_socket(address: str, reuse_port: bool = False) -> socket.socket:
    host, port = parse_address(address)
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # daemon.workers > 1: the kernel spreads connections over the workers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()  # a failed bind (say, on reload) must not leak the descriptor
        raise
    sock.setblocking(False)
    return sock


def udp_kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for this socket (receive buffer full), from
    /proc/net/udp{,6}; 0 where that is not available."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == inode:
                        return int(cols[12])
        except (OSError, StopIteration, ValueError):
            continue
    return 0
