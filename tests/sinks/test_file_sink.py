"""File sink: NDJSON, size rotation, keep_files."""

import orjson

from logpipe.buffer.base import Batch
from logpipe.config import FileSink
from logpipe.sinks.file import File

from ..helpers import run_async


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
    newest = [orjson.loads(l)["_msg"] for l in (tmp_path / "events.ndjson").read_bytes().splitlines()]
    previous = [orjson.loads(l)["_msg"] for l in (tmp_path / "events.1.ndjson").read_bytes().splitlines()]
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
    assert [orjson.loads(l)["_msg"] for l in lines] == [f"m{i}" for i in range(10)]
