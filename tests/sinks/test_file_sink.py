"""File sink: NDJSON, size rotation, keep_files; following its path when someone else
rotates the file (moved, deleted, truncated, SIGHUP); a failed write never stores a line
twice (injected at os.write, and on a real full tmpfs)."""

import asyncio
import errno
import os
import shutil
import socket
import subprocess

import orjson
import pytest

from logpipe.batch import Batch
from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import Batch as BatchConfig
from logpipe.config import FileSink
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks.base import SendError
from logpipe.sinks.file import File

from ..helpers import DaemonProcess, await_until, run_async, wait_until


def batch(start, n):
    records = [orjson.dumps({"_msg": f"m{i}", "pad": "x" * 80}) for i in range(start, start + n)]
    return Batch(f"b{start}", records, sum(map(len, records)) + n, 0.0)


def test_rotates_by_size_and_keeps_at_most_keep_files(tmp_path):
    sink = File("f", FileSink(path="events", rotate_bytes=1000, keep_files=2), str(tmp_path))

    async def scenario():
        for start in range(0, 100, 10):  # each batch ~1 KB: one file per batch
            await sink.send(batch(start, 10))
        await sink.close()

    run_async(scenario)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.1.ndjson", "events.2.ndjson", "events.ndjson"]
    newest = [orjson.loads(x)["_msg"] for x in (tmp_path / "events.ndjson").read_bytes().splitlines()]
    previous = [orjson.loads(x)["_msg"] for x in (tmp_path / "events.1.ndjson").read_bytes().splitlines()]
    assert newest == [f"m{i}" for i in range(90, 100)]
    assert previous == [f"m{i}" for i in range(80, 90)]


def test_appends_across_restarts(tmp_path):
    async def scenario():
        for start in (0, 5):
            sink = File("f", FileSink(path=str(tmp_path / "out")), str(tmp_path / "unused"))
            await sink.send(batch(start, 5))
            await sink.close()

    run_async(scenario)
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert [orjson.loads(x)["_msg"] for x in lines] == [f"m{i}" for i in range(10)]


# --- rotation by someone else: the sink follows the path ---------------------------------


def messages(path) -> list[str]:
    return [orjson.loads(line)["_msg"] for line in path.read_bytes().splitlines()]


def batches_around(tmp_path, rotate, count: int, **config) -> None:
    """Sends ``count`` lines, lets ``rotate(live_path)`` act as logrotate would, sends as
    many more, closes."""
    sink = File("f", FileSink(path="events", **config), str(tmp_path))

    async def scenario():
        await sink.send(batch(0, count))
        rotate(tmp_path / "events.ndjson")
        await sink.send(batch(count, count))
        await sink.close()

    run_async(scenario)


def test_a_file_moved_away_and_deleted_is_recreated_at_its_path(tmp_path):
    def mv_and_rm(live):  # `mv events.ndjson x; rm x`
        os.rename(live, tmp_path / "x")
        os.remove(tmp_path / "x")

    batches_around(tmp_path, mv_and_rm, 3)
    assert messages(tmp_path / "events.ndjson") == ["m3", "m4", "m5"]  # not confirmed into the deleted file


def test_logrotate_create_old_lines_stay_in_the_rotated_file_new_ones_go_to_the_path(tmp_path):
    def create(live):
        os.rename(live, tmp_path / "events.ndjson-20260101")
        live.touch()

    batches_around(tmp_path, create, 3)
    assert messages(tmp_path / "events.ndjson-20260101") == ["m0", "m1", "m2"]
    assert messages(tmp_path / "events.ndjson") == ["m3", "m4", "m5"]


def test_copytruncate_the_next_batch_starts_at_the_new_end_and_rotation_counts_from_there(tmp_path):
    def copytruncate(live):
        shutil.copyfile(live, tmp_path / "events.ndjson.1-copy")
        os.truncate(live, 0)

    # Each batch of 10 is ~1 KB: two would pass rotate_bytes, one after a truncation does not.
    batches_around(tmp_path, copytruncate, 10, rotate_bytes=1500)
    data = (tmp_path / "events.ndjson").read_bytes()
    assert b"\0" not in data  # no hole where the old offset was
    assert messages(tmp_path / "events.ndjson") == [f"m{i}" for i in range(10, 20)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.ndjson", "events.ndjson.1-copy"]  # no early rotation


def test_reopen_lets_go_of_a_moved_file_and_creates_the_path_at_once(tmp_path):
    sink = File("f", FileSink(path="events"), str(tmp_path))
    live = tmp_path / "events.ndjson"

    async def scenario():
        await sink.send(batch(0, 2))
        os.rename(live, tmp_path / "moved.ndjson")
        await sink.reopen()  # SIGHUP
        assert live.exists() and live.stat().st_size == 0
        await sink.send(batch(2, 2))
        await sink.close()

    run_async(scenario)
    assert messages(tmp_path / "moved.ndjson") == ["m0", "m1"]
    assert messages(live) == ["m2", "m3"]


# --- a failed write is taken back: a retry never stores a line twice ----------------------


def test_a_write_that_fails_part_way_is_cut_back_so_the_retry_stores_each_line_once(tmp_path, monkeypatch):
    sink = File("f", FileSink(path="events"), str(tmp_path))
    real_write = os.write
    failures = []

    def disk_fills_mid_batch(fd, data):
        if fd == sink._fd and not failures:
            if len(data) > 100:
                return real_write(fd, bytes(data[: len(data) // 2]))  # a short write ...
            failures.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full
        return real_write(fd, data)

    async def scenario():
        await sink.send(batch(0, 5))
        monkeypatch.setattr(os, "write", disk_fills_mid_batch)
        with pytest.raises(SendError) as failed:
            await sink.send(batch(5, 5))
        assert failed.value.retryable and "No space left on device" in str(failed.value)
        await sink.send(batch(5, 5))  # the deliverer's retry, once there is room again
        await sink.close()

    run_async(scenario)
    assert failures, "the injected failure never happened"
    assert messages(tmp_path / "events.ndjson") == [f"m{i}" for i in range(10)]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real ENOSPC. Needs CAP_SYS_ADMIN (root in CI); skipped otherwise."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(path) -> None:
    """Write ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"f" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_full_disk_then_freed_every_line_stored_exactly_once(small_disk):
    """The issue's scenario on a real filesystem: batches through the real deliverer into a
    disk that fills up mid-batch, then frees; every line must be stored once."""
    filler = small_disk / "filler"
    fill(filler)
    os.truncate(filler, os.path.getsize(filler) - 64 * 1024)  # 64 KiB of room left
    sink = File("f", FileSink(path="events"), str(small_disk))
    metrics = Metrics()
    buffer = MemoryBuffer("f", 64 * 1024 * 1024)
    deliverer = Deliverer(sink, buffer, BatchConfig(max_events=37, max_age_ms=1), retry_initial_s=0.01, retry_max_s=0.05,
                          dead_letters=DeadLetters(str(small_disk), "f"), metrics=metrics)
    records = [orjson.dumps({"_msg": f"m{i}", "pad": "x" * 100}) for i in range(2000)]  # ~250 KB

    async def scenario():
        task = asyncio.create_task(deliverer.run())
        buffer.push(records, sum(map(len, records)) + len(records))
        errors = metrics.counter("logpipe_send_errors_total", "", ("sink", "retryable")).labels("f", "true")
        await await_until(lambda: errors.value >= 3, 20, "the disk to fill")
        os.remove(filler)  # the disk frees
        await await_until(lambda: buffer.events == 0, 20, "every line delivered")
        buffer.close()
        await asyncio.wait_for(task, 10)
        await sink.close()

    run_async(scenario)
    stored = messages(small_disk / "events.ndjson")
    duplicated = len(stored) - len(set(stored))
    assert duplicated == 0, f"{duplicated} lines stored twice"
    assert stored == [f"m{i}" for i in range(2000)]


# --- the same, with a real running daemon ---------------------------------------------------


def daemon_config(data_dir) -> str:
    return f"""
[daemon]
data_dir = "{data_dir}"
log_format = "json"
shutdown_timeout_s = 5

[api]
listen = "127.0.0.1:0"

[sources.syslog]
tcp = "127.0.0.1:0"

[enrich]
hold_ms = 0

[sinks.out]
type = "file"
path = "events"
batch = {{ max_events = 100, max_age_ms = 20 }}
"""


def test_daemon_follows_its_file_through_delete_and_copytruncate(tmp_path):
    data = tmp_path / "data"
    live = data / "events.ndjson"
    daemon = DaemonProcess(str(tmp_path), daemon_config(data))
    try:
        def send(start: int, count: int) -> None:
            with socket.create_connection(daemon.tcp, timeout=10) as sock:
                sock.sendall(b"".join(b"<14>1 - host app - - - line %d\n" % i for i in range(start, start + count)))

        def stored() -> list[str]:
            return messages(live) if live.exists() else []

        send(0, 50)
        wait_until(lambda: len(stored()) == 50, 20, "the first 50 lines")
        os.rename(live, tmp_path / "x")
        os.remove(tmp_path / "x")  # the issue's `mv data/events.ndjson x; rm x`
        send(50, 50)
        wait_until(lambda: len(stored()) == 50 and stored()[0] == "line 50", 20, "the next lines in a new file")
        os.truncate(live, 0)  # copytruncate
        send(100, 50)
        wait_until(lambda: len(stored()) == 50 and stored()[0] == "line 100", 20, "the lines after the truncation")
        assert stored() == [f"line {i}" for i in range(100, 150)] and b"\0" not in live.read_bytes()
        assert daemon.metric("logpipe_sent_events_total", "sink=out") == 150
        assert [e["reason"] for e in daemon.logged("file_sink_reopened")] == ["deleted"]
        assert len(daemon.logged("file_sink_truncated")) == 1
    finally:
        assert daemon.stop() == 0
