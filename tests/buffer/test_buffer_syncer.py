"""The disk buffer's fsync thread: it runs only when something is unsynced (syncer.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from logpipe.buffer.syncer import Syncer


class CountingSyncer(Syncer):
    """Records each pass of the thread and when it happened."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.passes: list[float] = []
        self.passed = threading.Event()
        super().__init__(*args, **kwargs)

    def sync_once(self) -> None:
        super().sync_once()
        self.passes.append(time.monotonic())
        self.passed.set()


@pytest.fixture
def segment(tmp_path):
    fd = os.open(tmp_path / "s.seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    yield str(tmp_path), fd


@pytest.mark.parametrize("mode", ["interval", "always"])
def test_an_idle_syncer_never_wakes_and_a_write_is_synced_once(segment, mode):
    directory, fd = segment
    errors: list[OSError] = []
    syncer = CountingSyncer(mode, 0.05, directory, errors.append)
    try:
        syncer.set_fd(fd)
        assert not syncer.passed.wait(0.3)  # idle: no pass at all, however long
        written = time.monotonic()
        os.write(fd, b"x")
        syncer.written()
        syncer.written()  # a second write before the sync shares it
        assert syncer.passed.wait(5)
        if mode == "interval":  # waits out the interval, so one fsync covers its writes
            assert syncer.passes[0] - written >= 0.04
        syncer.passed.clear()
        assert not syncer.passed.wait(0.3)  # synced: idle again
        assert len(syncer.passes) == 1 and not errors
    finally:
        syncer.stop()
        os.close(fd)


def test_stop_does_not_wait_out_the_interval(segment):
    directory, fd = segment
    syncer = Syncer("interval", 60.0, directory, lambda e: None)
    syncer.set_fd(fd)
    os.write(fd, b"x")
    syncer.written()
    started = time.monotonic()
    syncer.stop()  # the final fsync happens at once
    assert time.monotonic() - started < 5
    os.close(fd)
