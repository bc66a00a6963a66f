"""The disk buffer against its contract (buffer/base.py) and its recovery rules (disk.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import orjson
import pytest

from logpipe.buffer import record
from logpipe.buffer.disk import LEDGER, DiskBuffer
from logpipe.config import Buffer as BufferConfig
from logpipe.metrics import Metrics
from tests.buffer.test_buffer_syncer import CountingSyncer
from tests.helpers import await_until


def chunk(start: int, n: int) -> tuple[list[bytes], int]:
    events = [orjson.dumps({"_msg": f"line {i}", "i": i}) for i in range(start, start + n)]
    return events, sum(map(len, events)) + len(events)


def numbers(events: list[bytes]) -> list[int]:
    return [orjson.loads(e)["i"] for e in events]


class Env:
    """A buffer directory that can be opened again and again, like restarts."""

    def __init__(self, directory: str, **config) -> None:
        self.directory = directory
        self.config = BufferConfig(type="disk", **{"max_bytes": 10_000_000, "fsync": "never", **config})
        self.metrics = Metrics()

    def open(self, segment_bytes: int | None = 2000) -> DiskBuffer:
        self.metrics = Metrics()
        return DiskBuffer("t", self.directory, self.config, self.metrics, segment_bytes=segment_bytes)

    def metric(self, name: str, *labels: str) -> float:
        family = self.metrics.get(name)
        return family.value(*labels) if family else 0.0  # type: ignore[union-attr]

    def segments(self) -> list[str]:
        return sorted(f for f in os.listdir(self.directory) if f.endswith(".seg"))


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(str(tmp_path / "buf"))


def run(coro):
    return asyncio.run(coro)


async def drain(buffer: DiskBuffer, max_events: int = 1000, ack: bool = True) -> list[bytes]:
    """Everything left, acknowledging each batch (the buffer is closed first)."""
    buffer.close()
    out: list[bytes] = []
    while (batch := await asyncio.wait_for(buffer.next_batch(max_events, 10_000_000, 0.0), 5)) is not None:
        out += batch.records
        if ack:
            buffer.ack(batch)
    return out


def push_range(buffer: DiskBuffer, start: int, chunks: int, per_chunk: int) -> None:
    for c in range(chunks):
        buffer.push(*chunk(start + c * per_chunk, per_chunk))


# --- contract ------------------------------------------------------------------------------


def test_batches_come_out_in_push_order_with_real_sizes(env):
    async def main():
        buffer = env.open()
        push_range(buffer, 0, 10, 7)
        assert buffer.events == 70
        assert buffer.bytes == sum(chunk(c * 7, 7)[1] for c in range(10))
        batch = await buffer.next_batch(25, 10_000_000, 0.0)
        assert numbers(batch.records) == list(range(25))
        assert batch.nbytes == sum(map(len, batch.records)) + 25
        assert buffer.events == 70  # unacknowledged still counts
        buffer.ack(batch)
        assert buffer.events == 45
        assert numbers(await drain(buffer)) == list(range(25, 70))
        assert buffer.events == 0 and buffer.bytes == 0
        await buffer.aclose()

    run(main())


def test_ndjson_chunks_are_stored_whole_and_read_back_as_records_after_a_restart(env):
    async def main():
        buffer = env.open()
        blob = b"".join(e + b"\n" for e in chunk(0, 6)[0])
        buffer.push_lines(blob, 6)
        buffer.push(*chunk(6, 3))  # a record list after it
        buffer.push_lines(b"".join(e + b"\n" for e in chunk(9, 2)[0]), 2)
        assert buffer.events == 11 and buffer.bytes == len(blob) + chunk(6, 3)[1] + chunk(9, 2)[1]
        batch = await buffer.next_batch(4, 10_000_000, 0.0)  # cuts the first chunk
        assert numbers(batch.records) == [0, 1, 2, 3] and batch.nbytes == sum(map(len, batch.records)) + 4
        buffer.ack(batch)
        await buffer.aclose()
        again = env.open()  # what was not acknowledged comes back, in order, nothing more
        assert again.events == 7
        assert numbers(await drain(again)) == list(range(4, 11))
        assert again.events == 0 and again.bytes == 0
        await again.aclose()

    run(main())


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_every_fsync_mode_round_trips_across_a_restart(env, fsync):
    env = Env(env.directory, fsync=fsync, fsync_interval_ms=10)

    async def main():
        buffer = env.open()
        push_range(buffer, 0, 20, 5)
        await buffer.aclose()
        again = env.open()
        assert env.metric("logpipe_buffer_replayed_events_total", "t") == 100
        assert numbers(await drain(again)) == list(range(100))
        await again.aclose()

    run(main())


def open_descriptors_under(directory: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(directory + "/"):
            found.append(target)
    return found


def test_what_the_sink_takes_within_the_interval_is_never_fsynced_and_the_rest_is(env, monkeypatch):
    # fsync = "interval": a push is on disk one interval after it was written at the
    # latest, unless it was acknowledged and its segment deleted before: a healthy sink
    # keeps the data off the disk.
    monkeypatch.setattr("logpipe.buffer.state.Syncer", CountingSyncer)
    env = Env(env.directory, fsync="interval", fsync_interval_ms=500)

    async def main():
        buffer = env.open(segment_bytes=500)
        syncer = buffer._syncer
        push_range(buffer, 0, 20, 5)  # several segments
        assert len(env.segments()) > 2
        assert numbers(await drain(buffer)) == list(range(100))  # taken and acknowledged at once
        await await_until(lambda: not open_descriptors_under(env.directory), what="the segments' descriptors closed")
        assert env.segments() == [] and syncer.fsynced == []
        await buffer.aclose()

        again = env.open(segment_bytes=500)
        syncer = again._syncer
        push_range(again, 100, 20, 5)  # never taken: due one interval later
        await await_until(lambda: len(syncer.fsynced) >= len(env.segments()), what="every segment fsynced")
        await again.aclose()
        assert numbers(await drain(env.open())) == list(range(100, 200))

    run(main())


def test_batch_limits_split_a_record_and_a_restart_resumes_inside_it(env):
    async def main():
        buffer = env.open()
        buffer.push(*chunk(0, 10))
        first = await buffer.next_batch(4, 10_000_000, 0.0)
        assert numbers(first.records) == [0, 1, 2, 3]
        buffer.ack(first)
        second = await buffer.next_batch(4, 10_000_000, 0.0)
        assert numbers(second.records) == [4, 5, 6, 7]  # taken, never acknowledged: crash
        again = env.open()
        assert again.events == 6
        replay = await again.next_batch(4, 10_000_000, 0.0)
        assert replay.id == second.id and replay.records == second.records
        again.ack(replay)
        assert numbers(await drain(again)) == [8, 9]
        await again.aclose()

    run(main())


def test_bytes_limit_shapes_batches_but_an_oversized_event_goes_alone(env):
    async def main():
        buffer = env.open()
        big = [b'{"_msg":"' + b"x" * 500 + b'"}']
        buffer.push(big, len(big[0]) + 1)
        buffer.push(*chunk(0, 3))
        first = await buffer.next_batch(100, 100, 0.0)
        assert first.records == big
        buffer.ack(first)
        assert numbers(await drain(buffer)) == [0, 1, 2]
        await buffer.aclose()

    run(main())


def test_next_batch_waits_for_max_age_then_returns_a_small_batch(env):
    async def main():
        buffer = env.open()
        buffer.push(*chunk(0, 2))
        loop = asyncio.get_running_loop()
        started = loop.time()
        batch = await asyncio.wait_for(buffer.next_batch(1000, 10_000_000, 0.2), 5)
        assert loop.time() - started >= 0.15
        assert numbers(batch.records) == [0, 1]
        await buffer.aclose()

    run(main())


def test_a_waiting_reader_wakes_when_enough_is_pushed(env):
    async def main():
        buffer = env.open()
        waiter = asyncio.create_task(buffer.next_batch(10, 10_000_000, 60.0))
        _, pending = await asyncio.wait([waiter], timeout=0.05)
        assert pending  # not enough yet, and max_age is far away
        push_range(buffer, 0, 2, 5)
        batch = await asyncio.wait_for(waiter, 5)
        assert numbers(batch.records) == list(range(10))
        await buffer.aclose()

    run(main())


def test_close_drains_without_waiting_then_returns_none(env):
    async def main():
        buffer = env.open()
        buffer.push(*chunk(0, 3))
        buffer.close()
        batch = await asyncio.wait_for(buffer.next_batch(1000, 10_000_000, 3600.0), 5)
        assert numbers(batch.records) == [0, 1, 2]
        buffer.ack(batch)
        assert await asyncio.wait_for(buffer.next_batch(1000, 10_000_000, 3600.0), 5) is None
        await buffer.aclose()

    run(main())


def test_acks_out_of_order_advance_the_ledger_only_over_a_complete_prefix(env):
    async def main():
        buffer = env.open()
        push_range(buffer, 0, 3, 2)
        a = await buffer.next_batch(2, 10_000_000, 0.0)
        b = await buffer.next_batch(2, 10_000_000, 0.0)
        buffer.ack(b)
        again = env.open()  # crash: a was never confirmed, so everything from a replays
        assert numbers(await drain(again)) == [0, 1, 2, 3, 4, 5]
        buffer.ack(a)
        assert buffer.events == 2
        await again.aclose()

    run(main())


def test_pressure_turns_on_at_max_bytes_and_off_below_the_low_watermark(env):
    env = Env(env.directory, max_bytes=1000)

    async def main():
        buffer = env.open()
        edges: list[bool] = []
        buffer.on_pressure = edges.append
        while not buffer.is_full:
            buffer.push(*chunk(0, 5))
        assert edges == [True]
        while buffer.events:
            batch = await buffer.next_batch(5, 10_000_000, 0.0)
            buffer.ack(batch)
        assert edges == [True, False]
        await buffer.aclose()

    run(main())


def test_lead_pauses_reading_while_the_sink_is_healthy_and_is_lifted_for_an_outage_and_its_catch_up(env):
    async def main():
        buffer = env.open()
        edges: list[bool] = []
        buffer.on_pressure = edges.append
        buffer.set_lead(1000)
        while not edges:
            buffer.push(*chunk(0, 5))
        assert edges == [True] and not buffer.is_full and buffer.bytes >= 1000  # paused at the lead
        buffer.set_sink_failing(True)  # outage: the disk takes it up to max_bytes
        assert edges == [True, False]
        push_range(buffer, 100, 100, 5)
        assert edges == [True, False] and buffer.bytes > 10 * 1000
        buffer.set_sink_failing(False)  # back, with a backlog ten leads long: senders keep going
        assert edges == [True, False]
        while buffer.bytes >= 800:  # the catch-up drains it under the lead's low watermark
            buffer.ack(await buffer.next_batch(5, 10_000_000, 0.0))
        push_range(buffer, 1000, 20, 5)  # caught up: the lead holds again
        assert edges == [True, False, True]
        await buffer.aclose()

    run(main())


def test_a_backlog_kept_over_a_restart_does_not_pause_reading_at_the_lead(env):
    async def main():
        buffer = env.open()
        push_range(buffer, 0, 100, 5)
        await buffer.aclose()
        buffer = env.open()
        edges: list[bool] = []
        buffer.on_pressure = edges.append
        buffer.set_lead(1000)
        buffer.push(*chunk(500, 5))
        assert edges == [] and buffer.events == 505
        await buffer.aclose()

    run(main())


# --- segments and the ledger ---------------------------------------------------------------


def test_acks_delete_segments_only_when_fully_acknowledged(env):
    async def main():
        buffer = env.open(segment_bytes=500)
        push_range(buffer, 0, 30, 5)
        before = env.segments()
        assert len(before) > 3
        batch = await buffer.next_batch(40, 10_000_000, 0.0)
        buffer.ack(batch)
        after = env.segments()
        assert after == before[len(before) - len(after) :]  # only the oldest went
        assert len(after) < len(before)
        # the remaining files hold exactly what is unacknowledged
        assert buffer.events == 110
        await drain(buffer)
        assert env.segments() == []  # fully acknowledged: nothing left on disk
        assert buffer.disk_bytes() == os.path.getsize(os.path.join(env.directory, LEDGER))
        await buffer.aclose()

    run(main())


def test_segment_ids_keep_increasing_after_everything_was_deleted(env):
    async def main():
        buffer = env.open()
        buffer.push(*chunk(0, 1))
        first = env.segments()
        await drain(buffer)
        await buffer.aclose()
        again = env.open()
        again.push(*chunk(1, 1))
        assert env.segments()[0] > first[0]
        await again.aclose()

    run(main())


def test_missing_ledger_is_rebuilt_and_nothing_unacknowledged_is_lost(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        batch = await buffer.next_batch(5, 10_000_000, 0.0)
        buffer.ack(batch)
        await buffer.aclose()
        os.remove(os.path.join(env.directory, LEDGER))
        again = env.open()
        got = numbers(await drain(again))
        # Rebuilt from the segments: the acknowledged head of the segment is replayed
        # (a duplicate), the rest is all there.
        assert got == list(range(20))
        await again.aclose()

    run(main())


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json\n", id="garbage"),
        pytest.param(b'{"ack":[1,2,3]}\n00000000\n', id="bad-crc"),
    ],
)
def test_damaged_ledger_is_rebuilt(env, damage):
    async def main():
        buffer = env.open()
        push_range(buffer, 0, 2, 5)
        await buffer.aclose()
        with open(os.path.join(env.directory, LEDGER), "wb") as f:
            f.write(damage)
        again = env.open()
        assert numbers(await drain(again)) == list(range(10))
        await again.aclose()

    run(main())


def test_ledger_pointing_at_a_deleted_segment_starts_at_the_next(env):
    async def main():
        buffer = env.open(segment_bytes=300)
        push_range(buffer, 0, 10, 5)
        segments = env.segments()
        ledger = os.path.join(env.directory, LEDGER)
        with open(ledger, "rb") as f:
            saved = f.read()  # ack still at the very start
        batch = await buffer.next_batch(1000, 10_000_000, 0.0)
        assert len(batch) == 50
        await buffer.aclose()
        # Simulate a crash between deleting the first segment and writing the ledger.
        os.remove(os.path.join(env.directory, segments[0]))
        with open(ledger, "wb") as f:
            f.write(saved)
        again = env.open()
        got = numbers(await drain(again))
        assert got and got == list(range(got[0], 50))  # the rest, in order, no gaps
        await again.aclose()

    run(main())


# --- damage ----------------------------------------------------------------------------------


def segment_file(env: Env) -> str:
    (name,) = env.segments()
    return os.path.join(env.directory, name)


def record_offsets(path: str) -> list[int]:
    with open(path, "rb") as f:
        data = f.read()
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos = record.decode(data, pos).end
    return offsets


def test_torn_tail_is_cut_back_and_counted(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        await buffer.aclose()
        path = segment_file(env)
        last = record_offsets(path)[-1]
        os.truncate(path, last + 10)  # the last write only half made it
        again = env.open()
        assert os.path.getsize(path) == last
        assert again.events == 15 and again.bytes == sum(chunk(c * 5, 5)[1] for c in range(3))
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 1
        assert numbers(await drain(again)) == list(range(15))
        await again.aclose()

    run(main())


def test_flipped_payload_byte_skips_that_record_only_and_counts_its_events(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        await buffer.aclose()
        path = segment_file(env)
        second = record_offsets(path)[1]
        with open(path, "r+b") as f:
            f.seek(second + record.HEADER_SIZE + 3)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x20]))
        again = env.open()
        assert again.events == 15
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 1
        assert env.metric("logpipe_dropped_events_total", "buffering", "corrupt") == 5
        assert numbers(await drain(again)) == list(range(5)) + list(range(10, 20))
        await again.aclose()

    run(main())


def test_flipped_header_byte_resyncs_to_the_next_record(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        await buffer.aclose()
        path = segment_file(env)
        with open(path, "r+b") as f:
            f.seek(0)
            f.write(b"\x00\x00")
        again = env.open()
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 1
        assert numbers(await drain(again)) == list(range(5, 20))
        await again.aclose()

    run(main())


@pytest.mark.parametrize("block", [pytest.param(None, id="whole-file"), pytest.param(100, id="100-byte-blocks"),
                                   pytest.param(33, id="33-byte-blocks")])
def test_the_start_check_reads_in_blocks_and_finds_the_same_damage(env, monkeypatch, block):
    from logpipe.buffer import recovery

    if block is not None:
        monkeypatch.setattr(recovery, "SCAN_BLOCK", block)

    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 10, 5)
        await buffer.aclose()
        path = segment_file(env)
        offsets = record_offsets(path)
        with open(path, "r+b") as f:
            f.seek(offsets[2] + record.HEADER_SIZE + 3)  # a payload byte of record 2
            f.write(b"#")
            f.seek(offsets[5] + 1)  # the header of record 5
            f.write(b"\x00\x00")
        os.truncate(path, offsets[9] + 40)  # record 9 torn
        again = env.open()
        assert os.path.getsize(path) == offsets[9]
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 3
        assert env.metric("logpipe_dropped_events_total", "buffering", "corrupt") == 10  # records 2 and 9
        assert again.events == 35
        assert numbers(await drain(again)) == [i for i in range(45) if i // 5 not in (2, 5)]
        await again.aclose()

    run(main())


def test_damage_appearing_after_start_is_skipped_while_reading(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        await buffer.aclose()
        again = env.open()  # the start finds the files whole; the reader will read them
        path = segment_file(env)
        with open(path, "r+b") as f:
            f.seek(record_offsets(path)[2] + record.HEADER_SIZE)
            f.write(b"!!")
        got = numbers(await drain(again))
        assert got == list(range(10)) + list(range(15, 20))
        assert again.events == 0 and again.bytes == 0  # the size stays the real one
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 1
        await again.aclose()

    run(main())


def test_a_reader_right_behind_the_writer_gets_pushed_events_from_memory_and_the_file_still_has_them(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 4, 5)
        path = segment_file(env)
        with open(path, "r+b") as f:  # damage the file under a reader that never reads it
            f.seek(record_offsets(path)[2] + record.HEADER_SIZE)
            f.write(b"!!")
        batch = await buffer.next_batch(1000, 10_000_000, 0.0)
        assert numbers(batch.records) == list(range(20))
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 0
        # Not acknowledged: a restart (SIGKILL) finds every record in the file.
        again = env.open()
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") == 1  # the one damaged on disk
        assert numbers(await drain(again)) == list(range(10)) + list(range(15, 20))
        await again.aclose()

    run(main())


def test_pushed_lines_in_memory_come_back_after_a_restart_when_unacknowledged(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        for c in range(3):  # as the pipeline pushes: one NDJSON blob per chunk
            buffer.push_lines(b"".join(e + b"\n" for e in chunk(c * 4, 4)[0]), 4)
        first = await buffer.next_batch(6, 10_000_000, 0.0)  # from memory, cutting a blob
        assert numbers(first.records) == list(range(6))
        assert first.ndjson() == b"".join(e + b"\n" for e in chunk(0, 6)[0])
        buffer.ack(first)
        second = await buffer.next_batch(3, 10_000_000, 0.0)  # taken, never acknowledged
        # SIGKILL now: no aclose, no final fsync; the kernel has every write.
        again = env.open()
        assert again.events == 6
        replay = await again.next_batch(3, 10_000_000, 0.0)
        assert replay.id == second.id and replay.ndjson() == second.ndjson()
        again.ack(replay)
        assert numbers(await drain(again)) == [9, 10, 11]
        await again.aclose()

    run(main())


def test_a_reader_far_behind_reads_the_file_and_memory_stays_bounded(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 1200, 100)  # ~3.5 MB: past the in-memory read-ahead (2 MiB here)
        held = sum(f.nbytes for f in buffer._ahead)
        assert 0 < held <= 2 * 1024 * 1024
        assert sum(s.undecoded_events for s in buffer._segments) > 0  # the rest is only in the file
        assert numbers(await drain(buffer, max_events=7000)) == list(range(120_000))
        assert buffer.events == 0
        await buffer.aclose()

    run(main())


def test_a_segment_of_pure_garbage_never_blocks_the_buffer(env):
    async def main():
        buffer = env.open(segment_bytes=10_000_000)
        push_range(buffer, 0, 2, 5)
        await buffer.aclose()
        with open(os.path.join(env.directory, "00000000000000000001.seg"), "wb") as f:
            f.write(os.urandom(5000))
        again = env.open()
        assert numbers(await drain(again)) == list(range(10))
        assert env.metric("logpipe_buffer_corrupt_records_total", "t") >= 1
        again.push(*chunk(10, 1))
        assert numbers(await drain(again)) == [10]
        await again.aclose()

    run(main())


# --- disk full --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs), so writes fail with ENOSPC for real."""
    mountpoint = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up: {result.stderr.decode().strip()}")
    try:
        yield str(mountpoint)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: str) -> str:
    """Fill the filesystem up; returns the filler file to delete to free the space."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return path


# Chunks of 200 events (over 4 KiB) so that a write needs a fresh page: tmpfs lets a
# file grow into the unused end of its last page even when the filesystem is full.
BIG = 200


def test_disk_full_with_block_holds_chunks_then_writes_them_when_space_returns(small_disk):
    env = Env(os.path.join(small_disk, "buf"), max_bytes=10_000_000, when_full="block")

    async def main():
        buffer = env.open(segment_bytes=4096)
        edges: list[bool] = []
        buffer.on_pressure = edges.append
        push_range(buffer, 0, 2, 5)
        filler = fill(small_disk)
        push_range(buffer, 10, 4, BIG)  # the disk refuses these: held, never raised
        assert buffer.events == 810 and buffer.is_full and edges == [True]
        assert env.metric("logpipe_buffer_write_errors_total", "t") >= 1
        os.remove(filler)
        await await_until(lambda: not buffer.is_full, 5, "the retry timer to rewrite the spill")
        assert edges == [True, False]
        assert numbers(await drain(buffer)) == list(range(810))
        assert env.metric("logpipe_dropped_events_total", "buffering", "disk_error") == 0
        await buffer.aclose()

    run(main())


def test_disk_full_with_drop_newest_drops_and_counts_exactly_then_recovers(small_disk):
    env = Env(os.path.join(small_disk, "buf"), max_bytes=10_000_000, when_full="drop_newest")

    async def main():
        buffer = env.open(segment_bytes=4096)
        push_range(buffer, 0, 2, 5)
        filler = fill(small_disk)
        push_range(buffer, 10, 2, BIG)
        assert buffer.events == 10 and not buffer.is_full
        assert env.metric("logpipe_dropped_events_total", "buffering", "disk_error") == 2 * BIG
        os.remove(filler)
        push_range(buffer, 1000, 1, 5)
        assert numbers(await drain(buffer)) == list(range(10)) + list(range(1000, 1005))
        await buffer.aclose()

    run(main())


def test_acknowledging_frees_segments_so_a_full_disk_drains_its_spill(small_disk):
    env = Env(os.path.join(small_disk, "buf"), max_bytes=10_000_000, when_full="block")

    async def main():
        buffer = env.open(segment_bytes=2048)
        push_range(buffer, 0, 40, 5)
        fill(small_disk)
        push_range(buffer, 200, 2, BIG)
        assert buffer.is_full
        got: list[bytes] = []
        for _ in range(100):
            batch = await asyncio.wait_for(buffer.next_batch(50, 10_000_000, 0.0), 5)
            got += batch.records
            buffer.ack(batch)  # frees whole segments, so the held chunks get written
            if not buffer.events:
                break
        assert numbers(got) == list(range(200 + 2 * BIG))
        await buffer.aclose()

    run(main())


# --- config ------------------------------------------------------------------------------------


def test_config_accepts_the_fsync_settings_and_names_a_bad_one():
    from logpipe.config import ConfigError, loads

    base = '[sinks.s]\ntype = "file"\nbuffer = {{ type = "disk", fsync = {} }}\n'
    assert loads(base.format('"always"')).sinks["s"].buffer.fsync == "always"
    with pytest.raises(ConfigError) as e:
        loads(base.format('"sometimes"'))
    assert e.value.problems[0].startswith("sinks.s.buffer.fsync:")
