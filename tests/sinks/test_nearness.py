"""compression = "auto": which store addresses count as near (no gzip), from routing tables
as Linux prints them, and the sink choosing per endpoint against a real loopback server."""

import asyncio

import orjson
import pytest
from aiohttp import web

import logpipe.sinks.http as http_module
from logpipe.batch import Batch
from logpipe.config import VictoriaLogsSink
from logpipe.sinks.http import HttpPoster
from logpipe.sinks.nearness import directly_attached, is_near, point_to_point_interfaces
from logpipe.sinks.victorialogs import VictoriaLogs

from ..helpers import VictoriaLogsServer, run_async, serve_http, victorialogs_bin

_IPV4_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def ipv4_table(*routes: tuple[str, str, str, str, int, str]) -> str:
    """/proc/net/route lines from (iface, destination, gateway, flags, metric, mask) with
    dotted addresses, written as the kernel writes them (little-endian hex)."""

    def le(dotted: str) -> str:
        return "".join(f"{int(octet):02X}" for octet in reversed(dotted.split(".")))

    return _IPV4_HEADER + "".join(
        f"{iface}\t{le(dest)}\t{le(gw)}\t{flags}\t0\t0\t{metric}\t{le(mask)}\t0\t0\t0\n"
        for iface, dest, gw, flags, metric, mask in routes
    )


# A container on a Docker bridge network: the default route through the bridge's gateway,
# the bridge's /16 directly attached; a WireGuard tunnel beside it.
CONTAINER = ipv4_table(
    ("eth0", "0.0.0.0", "172.18.0.1", "0003", 0, "0.0.0.0"),
    ("eth0", "172.18.0.0", "0.0.0.0", "0001", 0, "255.255.0.0"),
    ("wg0", "10.8.0.0", "0.0.0.0", "0001", 0, "255.255.255.0"),
    ("eth0", "10.0.0.0", "172.18.0.1", "0003", 0, "255.0.0.0"),
    ("eth0", "10.1.0.0", "0.0.0.0", "0001", 0, "255.255.0.0"),
    ("eth0", "192.168.9.0", "0.0.0.0", "0201", 0, "255.255.255.0"),  # unreachable (RTF_REJECT)
)

# /proc/net/ipv6_route of the machine the suite was written on: a ULA /64 and link-local
# directly attached, the default through fd00::1, local and multicast routes, and the
# kernel's closing "unreachable" ::/0 on lo.
IPV6 = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
"""
IPV6_NO_DEFAULT = "\n".join(line for line in IPV6.splitlines() if " fd000000000000000000000000000001 " not in line)


def test_ipv4_directly_attached_networks_are_near_and_routed_ones_are_not():
    def near(address, p2p=frozenset()):
        return directly_attached(address, CONTAINER, "", p2p)

    assert near("172.18.0.2")  # another container on the same bridge
    assert not near("8.8.8.8")  # through the gateway
    assert near("10.1.2.3") and not near("10.2.0.1")  # the longest prefix decides
    assert near("10.8.0.5") and not near("10.8.0.5", frozenset({"wg0"}))  # a tunnel is not near
    assert not near("192.168.9.4")  # an unreachable route is no way there
    assert near("127.0.0.1") and near("127.0.0.5")  # loopback, whatever the table says
    assert not directly_attached("172.18.0.2", "", "")  # no table: not near (gzip)
    assert not near("not-an-address")


def test_ipv6_and_mapped_addresses():
    assert directly_attached("fd00::5", "", IPV6)
    assert directly_attached("fe80::1%eth0", "", IPV6)  # a zone index is not part of the address
    assert not directly_attached("2001:db8::1", "", IPV6)  # the default route, through fd00::1
    assert not directly_attached("2001:db8::1", "", IPV6_NO_DEFAULT)  # only the kernel's unreachable ::/0
    assert directly_attached("::1", "", "")
    assert directly_attached("::ffff:172.18.0.2", CONTAINER, "")
    assert not directly_attached("::ffff:8.8.8.8", CONTAINER, "")


def test_point_to_point_interfaces_from_their_flags(tmp_path):
    for name, flags in (("eth0", "0x1003"), ("wg0", "0x90"), ("tun0", "0x10d1"), ("lo", "0x9"), ("odd", "junk")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n")
    assert point_to_point_interfaces(str(tmp_path)) == {"wg0", "tun0"}
    assert point_to_point_interfaces(str(tmp_path / "missing")) == frozenset()
    assert is_near("127.0.0.5")  # this machine's own tables


def test_by_route_compresses_only_for_a_far_endpoint_and_remembers_the_answer(monkeypatch):
    seen: list[tuple[str | None, bytes]] = []
    asked: list[str] = []
    answer = {"near": True}

    async def handler(request):
        # aiohttp inflates a gzip body itself (and answers 400 to one that is not gzip)
        seen.append((request.headers.get("Content-Encoding"), await request.read()))
        return web.Response(status=204)

    def fake_is_near(address):
        asked.append(address)
        return answer["near"]

    monkeypatch.setattr(http_module, "is_near", fake_is_near)

    async def scenario():
        runner, url = await serve_http(("POST", "/in", handler))
        poster = HttpPoster("victorialogs test", 5.0, None, by_route=True)
        try:
            body = poster.ndjson_body([b'{"_msg":"a"}\n', b'{"_msg":"b"}\n'])
            await poster.post(url + "/in", body, {})
            await poster.post(url + "/in", body, {})  # the answer is kept: not asked again
            monkeypatch.setattr(http_module, "_NEARNESS_TTL_S", 0.0)
            answer["near"] = False
            await poster.post(url + "/in", body, {})
        finally:
            await poster.close()
            await runner.cleanup()

    run_async(scenario)
    assert asked == ["127.0.0.1", "127.0.0.1"]
    assert [encoding for encoding, _ in seen] == [None, None, "gzip"]
    assert [body for _, body in seen] == [b'{"_msg":"a"}\n{"_msg":"b"}\n'] * 3


def test_an_unresolved_name_is_compressed_for_and_asked_again(monkeypatch):
    lookups: list[str] = []

    async def unresolved(host, port):
        lookups.append(host)
        raise OSError("Name or service not known")

    monkeypatch.setattr(http_module, "_first_address", unresolved)

    async def scenario():
        poster = HttpPoster("victorialogs test", 5.0, None, by_route=True)
        try:
            return [await poster._gzip_for("http://victorialogs:9428/x") for _ in range(2)]
        finally:
            await poster.close()

    assert run_async(scenario) == [True, True]
    assert lookups == ["victorialogs", "victorialogs"]


@pytest.mark.skipif(victorialogs_bin() is None, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
@pytest.mark.parametrize("near", [True, False])
def test_a_real_victorialogs_stores_what_auto_sends_near_and_far(tmp_path, monkeypatch, near):
    server = VictoriaLogsServer(victorialogs_bin(), str(tmp_path / "vl"))
    server.start()
    # A loopback URL is decided by the config alone; here the sink decides, as for a name.
    monkeypatch.setattr(VictoriaLogsSink, "uses_gzip", lambda self: None)
    monkeypatch.setattr(http_module, "is_near", lambda address: near)
    lines = [orjson.dumps({"_msg": f"auto seq={i}", "_time": "2024-05-01T10:00:00Z", "service": "near" if near else "far"})
             for i in range(50)]

    async def scenario():
        sink = VictoriaLogs("vl", VictoriaLogsSink(url=server.url))
        try:
            await sink.send(Batch("b1", lines, sum(map(len, lines)) + len(lines), 0.0))
        finally:
            await sink.close()

    try:
        run_async(scenario)
        stored = server.query("auto | sort by (_msg)")
    finally:
        server.stop()
    assert sorted(row["_msg"] for row in stored) == sorted(f"auto seq={i}" for i in range(50))
    assert {row["service"] for row in stored} == {"near" if near else "far"}


def test_a_resolver_that_does_not_answer_is_bounded_by_the_request_timeout(monkeypatch):
    async def hanging(host, port):
        await asyncio.Event().wait()  # a resolver that never answers

    monkeypatch.setattr(http_module, "_first_address", hanging)

    async def scenario():
        poster = HttpPoster("victorialogs test", 0.2, None, by_route=True)
        try:
            return await asyncio.wait_for(poster._gzip_for("http://victorialogs:9428/x"), 10)
        finally:
            await poster.close()

    assert run_async(scenario) is True
