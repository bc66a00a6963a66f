"""The disk buffer's fsync thread: it runs only when something is unsynced, and a file
deleted before it falls due is never fsynced (syncer.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from logpipe.buffer.segment import Segment
from logpipe.buffer.syncer import Syncer
from tests.helpers import wait_until


class CountingSyncer(Syncer):
    """Records each pass of the thread, when it happened, and which descriptors it fsynced."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.passes: list[float] = []
        self.passed = threading.Event()
        self.fsynced: list[int] = []
        super().__init__(*args, **kwargs)

    def sync_once(self, now: float | None = None) -> None:
        super().sync_once(now)
        self.passes.append(time.monotonic())
        self.passed.set()

    def _fsync(self, fd: int) -> None:
        super()._fsync(fd)
        self.fsynced.append(fd)


def one_pass_then_idle(syncer: CountingSyncer) -> bool:
    """Waits for the thread's next pass; True if it was its only one and it is idle after."""
    assert syncer.passed.wait(5)
    syncer.passed.clear()
    return not syncer.passed.wait(0.3) and len(syncer.passes) == 1


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
        assert one_pass_then_idle(syncer) and not errors  # synced: idle again
        if mode == "interval":  # waits out the interval, so one fsync covers its writes
            assert syncer.passes[0] - written >= 0.04
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


def test_a_segment_deleted_before_it_is_due_is_never_fsynced(tmp_path):
    # One written and deleted within the interval (a sink took its events) and one that is
    # still needed when it falls due: only the second one goes to the disk.
    paths = [tmp_path / "1.seg", tmp_path / "2.seg"]
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND) for p in paths]
    segments = [Segment(i, str(p)) for i, p in enumerate(paths)]
    errors: list[OSError] = []
    syncer = CountingSyncer("interval", 0.3, str(tmp_path), errors.append)
    try:
        for fd, segment in zip(fds, segments, strict=True):
            syncer.set_fd(fd)
            os.write(fd, b"x" * 1000)
            syncer.written()
            syncer.retire(fd, segment)
        os.remove(paths[0])
        segments[0].deleted = True
        syncer.meta_changed()
        wait_until(lambda: fds[1] in syncer.fsynced, what="the needed segment's fsync")
        assert fds[0] not in syncer.fsynced and not errors
    finally:
        syncer.stop()
    assert fds[0] not in syncer.fsynced  # not at the stop either


def test_the_active_file_is_fsynced_one_interval_after_its_first_write(segment):
    directory, fd = segment
    syncer = CountingSyncer("interval", 0.2, directory, lambda e: None)
    try:
        syncer.set_fd(fd)
        first = time.monotonic()
        for _ in range(3):  # later writes do not push the due time back
            os.write(fd, b"x")
            syncer.written()
        wait_until(lambda: fd in syncer.fsynced, what="the active file's fsync")
        assert time.monotonic() - first >= 0.18
        assert syncer.fsynced == [fd]
    finally:
        syncer.stop()
        os.close(fd)


def test_a_segment_retired_with_nothing_unsynced_is_closed_without_an_fsync(segment):
    directory, fd = segment
    syncer = CountingSyncer("interval", 0.05, directory, lambda e: None)
    try:
        syncer.set_fd(fd)
        syncer.retire(fd, Segment(1, os.path.join(directory, "s.seg")))  # never written since
        assert one_pass_then_idle(syncer) and syncer.fsynced == []  # one pass closed it
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        syncer.stop()
