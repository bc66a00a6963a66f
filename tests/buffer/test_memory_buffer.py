"""Memory buffer: batching limits, max age, pressure edges, drain on close."""

import asyncio

from logpipe.buffer.memory import MemoryBuffer

from ..helpers import run_async


def records(n, prefix="e", size=10):
    return [f"{prefix}{i}".ljust(size, "x").encode() for i in range(n)]


def push(buffer, recs):
    buffer.push(recs, sum(map(len, recs)) + len(recs))


def test_batch_respects_max_events_across_chunks():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        push(buffer, records(7, "a"))
        push(buffer, records(7, "b"))
        first = await buffer.next_batch(10, 10**9, 60)
        second = await buffer.next_batch(10, 10**9, 0.01)
        return first, second, buffer

    first, second, buffer = run_async(scenario)
    assert len(first) == 10 and len(second) == 4
    assert first.records[:7] == records(7, "a") and first.records[7:] == records(7, "b")[:3]
    assert second.records == records(7, "b")[3:]
    assert buffer.events == 14  # unacknowledged still counts
    buffer.ack(first)
    buffer.ack(second)
    assert buffer.events == 0 and buffer.bytes == 0


def test_batch_respects_max_bytes_but_takes_one_oversized_record():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        push(buffer, [b"x" * 100, b"y" * 5, b"z" * 5])
        a = await buffer.next_batch(100, 50, 0)
        b = await buffer.next_batch(100, 50, 0)
        return a, b

    a, b = run_async(scenario)
    assert a.records == [b"x" * 100]
    assert b.records == [b"y" * 5, b"z" * 5]


def test_small_batch_waits_for_max_age():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        push(buffer, records(3))
        loop = asyncio.get_running_loop()
        start = loop.time()
        batch = await buffer.next_batch(1000, 10**9, 0.2)
        return batch, loop.time() - start

    batch, waited = run_async(scenario)
    assert len(batch) == 3 and waited >= 0.19


def test_full_threshold_wakes_waiter_without_waiting_for_age():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        waiter = asyncio.create_task(buffer.next_batch(5, 10**9, 30))
        push(buffer, records(2))
        push(buffer, records(3))
        return await asyncio.wait_for(waiter, 5)

    assert len(run_async(scenario)) == 5


def test_pressure_edges_with_hysteresis():
    edges = []
    buffer = MemoryBuffer("t", 100)
    buffer.on_pressure = edges.append

    async def scenario():
        push(buffer, [b"x" * 59])  # 60 bytes
        push(buffer, [b"x" * 59])  # 120: full
        assert edges == [True]
        b1 = await buffer.next_batch(1, 10**9, 0)
        buffer.ack(b1)  # 60 < 80: resume
        return edges

    assert run_async(scenario) == [True, False]


def test_close_drains_without_waiting_then_returns_none():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        push(buffer, records(3))
        buffer.close()
        batch = await buffer.next_batch(1000, 10**9, 3600)
        end = await buffer.next_batch(1000, 10**9, 3600)
        return batch, end

    batch, end = run_async(scenario)
    assert len(batch) == 3 and end is None


def test_lead_pauses_reading_early_while_the_sink_is_healthy():
    async def scenario():
        buffer = MemoryBuffer("t", 10_000)
        edges = []
        buffer.on_pressure = edges.append
        buffer.set_lead(1_000)
        push(buffer, records(50, size=19))  # 1,000 bytes: the lead, far below max_bytes
        assert edges == [True] and not buffer.is_full  # pressure, but nothing would be dropped
        batch = await buffer.next_batch(45, 10**9, 60)
        buffer.ack(batch)  # 100 bytes left: under the low watermark of the lead
        assert edges == [True, False]
        return buffer, edges

    run_async(scenario)


def test_lead_is_lifted_while_the_sink_fails_so_the_buffer_absorbs_the_outage():
    async def scenario():
        buffer = MemoryBuffer("t", 10_000)
        edges = []
        buffer.on_pressure = edges.append
        buffer.set_lead(1_000)
        push(buffer, records(50, size=19))
        assert edges == [True]
        buffer.set_sink_failing(True)  # outage: room up to max_bytes again
        assert edges == [True, False]
        push(buffer, records(400, size=19))  # 9,000 bytes: below max_bytes, no pressure
        assert edges == [True, False]
        push(buffer, records(50, size=19))  # 10,000: full
        assert edges == [True, False, True] and buffer.is_full
        buffer.set_sink_failing(False)  # recovered: still far over the lead, stays paused
        assert edges == [True, False, True]
        assert buffer.events == 500  # nothing dropped or lost on the way

    run_async(scenario)


def ndjson(recs):
    return b"".join(r + b"\n" for r in recs)


def test_ndjson_chunks_stay_whole_and_split_only_where_a_batch_limit_cuts_them():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        buffer.push_lines(ndjson(records(4, "a")), 4)
        buffer.push_lines(ndjson(records(4, "b")), 4)
        push(buffer, records(2, "c"))  # a record list after the blobs
        buffer.push_lines(ndjson(records(4, "d")), 4)
        whole = await buffer.next_batch(8, 10**9, 0)  # both blobs fit: kept whole
        mixed = await buffer.next_batch(4, 10**9, 0)  # the list, then half of a blob
        rest = await buffer.next_batch(100, 10**9, 0)
        return buffer, whole, mixed, rest

    buffer, whole, mixed, rest = run_async(scenario)
    assert whole._records is None  # nothing was split to build it
    assert whole.ndjson() == ndjson(records(4, "a") + records(4, "b"))
    assert len(whole) == 8 and whole.records == records(4, "a") + records(4, "b")
    assert mixed.records == records(2, "c") + records(4, "d")[:2]
    assert mixed.ndjson() == ndjson(mixed.records)
    assert rest.records == records(4, "d")[2:] and len(rest) == 2
    assert buffer.events == 14 and buffer.bytes == sum(b.nbytes for b in (whole, mixed, rest))
    assert [b.nbytes for b in (whole, mixed, rest)] == [len(b.ndjson()) for b in (whole, mixed, rest)]
    for batch in (whole, mixed, rest):
        buffer.ack(batch)
    assert buffer.events == 0 and buffer.bytes == 0


def test_ndjson_chunk_over_max_bytes_is_cut_at_record_boundaries():
    async def scenario():
        buffer = MemoryBuffer("t", 10**9)
        buffer.push_lines(ndjson([b"x" * 100, b"y" * 5, b"z" * 5]), 3)
        buffer.push_lines(ndjson([b"w" * 60]), 1)
        push(buffer, [b"v" * 70])
        batches = [await buffer.next_batch(100, 50, 0) for _ in range(4)]
        return buffer, batches

    buffer, (a, b, c, d) = run_async(scenario)
    assert a.records == [b"x" * 100] and a.nbytes == 101
    assert b.records == [b"y" * 5, b"z" * 5] and b.ndjson() == b"yyyyy\nzzzzz\n"
    assert c.records == [b"w" * 60] and d.records == [b"v" * 70]  # one oversized record each
    assert buffer.events == 5 and buffer.bytes == 101 + 12 + 61 + 71
