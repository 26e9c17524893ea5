"""Shared bits of the per-system GPU checks: the device in use, synchronisation and timing."""

from __future__ import annotations

import statistics
import time

import torch

DEV = "cuda"


def set_device(device: str) -> None:
    global DEV
    DEV = device


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and its last output."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
