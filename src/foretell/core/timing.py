"""Wall-clock timing with warm-up and medians, the way every speed-up in foretell is measured."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Timing:
    """Per-repeat wall-clock seconds of a callable, after warm-up; ``median`` is the headline."""

    seconds: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.seconds) if len(self.seconds) > 1 else 0.0

    def as_dict(self) -> dict:
        return {"median_s": self.median, "mean_s": self.mean, "std_s": self.stdev,
                "repeats": len(self.seconds)}


def _sync() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def time_callable(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; keep the last result.

    CUDA work is synchronised around each call so GPU timings are real.
    """
    if repeats < 1 or warmup < 0:
        from foretell.core.errors import ForetellError

        raise ForetellError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    timing = Timing()
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        timing.result = fn()
        _sync()
        timing.seconds.append(time.perf_counter() - t0)
    return timing


def speedup(baseline: Timing | float, other: Timing | float) -> float:
    """Ratio baseline/other of medians (>1 means ``other`` is faster)."""
    b = baseline.median if isinstance(baseline, Timing) else float(baseline)
    o = other.median if isinstance(other, Timing) else float(other)
    return b / o if o > 0 else float("inf")


def time_interleaved(cells: list, run: Callable[..., Any], *, repeats: int, warmup_rounds: int = 2) -> tuple[dict, list]:
    """Time ``run(*cell)`` for every cell, ``repeats`` rounds in rotating order after
    ``warmup_rounds`` untimed rounds, so load drifts hit every cell alike.

    Returns ({cell: [seconds per round]}, [1-min load average before, after])."""
    import os

    for _ in range(warmup_rounds):
        for c in cells:
            run(*c)
    times = {c: [] for c in cells}
    load = [os.getloadavg()[0]]
    for rep in range(repeats):
        shift = rep % len(cells)
        for c in cells[shift:] + cells[:shift]:
            _sync()
            t0 = time.perf_counter()
            run(*c)
            _sync()
            times[c].append(time.perf_counter() - t0)
    load.append(os.getloadavg()[0])
    return times, load
