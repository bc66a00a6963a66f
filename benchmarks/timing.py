"""The one timing loop the per-core benchmarks share: best rate over rounds of process CPU
time, so another job on the shared machine slows a round without skewing the best one."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_rate(run_once: Callable[[], int], seconds: float, rounds: int = 5) -> float:
    """Items per CPU second: the best of about ``rounds`` rounds in ``seconds`` of CPU time.
    ``run_once`` does one pass over the data and returns how many items it processed."""
    best = 0.0
    deadline = time.process_time() + seconds
    while time.process_time() < deadline or best == 0.0:
        count = 0
        start = time.process_time()
        while time.process_time() - start < seconds / rounds:
            count += run_once()
        best = max(best, count / (time.process_time() - start))
    return best
