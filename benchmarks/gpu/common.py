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


def run_substep(res: dict, name: str, fn, *, peak: bool = False) -> None:
    """``res[name] = fn()`` with its ``seconds``; an exception is recorded there (error + traceback)
    instead of raised, so the next sub-step still runs. Afterwards garbage is collected and the CUDA
    cache emptied; with ``peak`` the sub-step's peak GPU memory is recorded and the counter reset."""
    import gc
    import traceback

    t0 = time.perf_counter()
    try:
        res[name] = fn()
    except Exception as exc:  # recorded; the next sub-step still runs
        res[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    res[name]["seconds"] = time.perf_counter() - t0
    gc.collect()
    if DEV == "cuda":
        if peak:
            res[name]["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        torch.cuda.empty_cache()
        if peak:
            torch.cuda.reset_peak_memory_stats()
