"""Is a store's address on this host or on a network this host is directly attached to?

A sink's ``compression = "auto"`` sends uncompressed to such a store: no router sits
between, the bytes cost nothing, and gzip would cost logpipe ~3 CPU-µs a line and the store
its inflate. Anything reached through a gateway, or through a point-to-point tunnel
(WireGuard, OpenVPN: a link that may cross a WAN), gets gzip.

The answer comes from the kernel's main routing table as Linux shows it
(``/proc/net/route``, ``/proc/net/ipv6_route``): the longest prefix that holds the address
decides, and a route without a gateway is "directly attached". Parsing is pure
(:func:`directly_attached`); :func:`is_near` reads the files. Where they cannot be read
(another OS) the answer is "not near", which keeps gzip.
"""

from __future__ import annotations

import ipaddress
import os

__all__ = ["directly_attached", "is_near", "point_to_point_interfaces"]

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2
_RTF_REJECT = 0x200  # "unreachable" (Linux's IPv6 table ends with one for ::/0 on lo)
_IFF_POINTOPOINT = 0x10

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ipv4_routes(text: str) -> list[tuple[ipaddress.IPv4Network, bool, str, int]]:
    """(network, via a gateway, interface, metric) of each usable IPv4 route; the values
    in the file are hex in host (little-endian) byte order."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            iface, dest, gateway, flags, metric, mask = fields[0], fields[1], fields[2], int(fields[3], 16), int(fields[6]), fields[7]
            network = ipaddress.IPv4Network((_le_ipv4(dest), str(_le_ipv4(mask))), strict=False)
            via = bool(flags & _RTF_GATEWAY) or int(gateway, 16) != 0
        except ValueError:
            continue
        if flags & _RTF_UP and not flags & _RTF_REJECT:
            routes.append((network, via, iface, metric))
    return routes


def _le_ipv4(hex_text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(hex_text, 16).to_bytes(4, "little"))


def _ipv6_routes(text: str) -> list[tuple[ipaddress.IPv6Network, bool, str, int]]:
    routes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            network = ipaddress.IPv6Network((int(fields[0], 16), int(fields[1], 16)), strict=False)
            next_hop, metric, flags, iface = int(fields[4], 16), int(fields[5], 16), int(fields[8], 16), fields[9]
        except ValueError:
            continue
        if flags & _RTF_UP and not flags & _RTF_REJECT:
            routes.append((network, bool(flags & _RTF_GATEWAY) or next_hop != 0, iface, metric))
    return routes


def directly_attached(address: str, ipv4_routes: str, ipv6_routes: str, point_to_point: frozenset[str] = frozenset()) -> bool:
    """True when ``address`` is loopback, or the route the kernel would take to it (the
    longest matching prefix, then the lowest metric) has no gateway and does not leave
    through one of the ``point_to_point`` interfaces. Route texts as in
    ``/proc/net/route`` and ``/proc/net/ipv6_route``."""
    try:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return True
    routes = _ipv4_routes(ipv4_routes) if ip.version == 4 else _ipv6_routes(ipv6_routes)
    best = None
    for network, via, iface, metric in routes:
        if ip in network:
            key = (network.prefixlen, -metric)
            if best is None or key > best[0]:
                best = (key, via, iface)
    if best is None:
        return False
    _, via, iface = best
    return not via and iface not in point_to_point


def point_to_point_interfaces(sys_class_net: str = "/sys/class/net") -> frozenset[str]:
    """Interfaces whose flags say point-to-point (tunnels)."""
    found = set()
    try:
        names = os.listdir(sys_class_net)
    except OSError:
        return frozenset()
    for name in names:
        try:
            with open(os.path.join(sys_class_net, name, "flags")) as f:
                if int(f.read().strip(), 16) & _IFF_POINTOPOINT:
                    found.add(name)
        except (OSError, ValueError):
            continue
    return frozenset(found)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def is_near(address: str) -> bool:
    """:func:`directly_attached` against this host's routing table (Linux)."""
    return directly_attached(address, _read("/proc/net/route"), _read("/proc/net/ipv6_route"), point_to_point_interfaces())
