"""Profiling helpers of check_specdiff: a torch.profiler summary of one SpecDiff run, ATen operators
per transformer call, and per-step wall/host times. Run them after every timing: a CUDA profiler
session can leave launch overhead behind."""

from __future__ import annotations

import time

import numpy as np

import common


_RANGES = ("specdiff::scoring", "specdiff::speculative_pass", "specdiff::levels_history")


def _profile(tr, loop, make_scheduler, guidance) -> dict:
    """torch.profiler over one default SpecDiff run (after a warm-up): top 15 ops and kernels by CUDA
    time, and the CUDA time inside the scoring calls, the speculative pass (its scoring included) and
    the level selection / feature history bookkeeping."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    import foretell.specdiff as sd
    from foretell.specdiff import hooks
    from foretell.specdiff.attention import AttentionContext
    from foretell.specdiff.history import FeatureHistory
    from foretell.specdiff.importance import TokenImportance

    def wrapped(owner, attr, label):
        fn = getattr(owner, attr)

        def inner(*a, **kw):
            with record_function(label):
                return fn(*a, **kw)
        return fn, inner

    patches = [(AttentionContext, "attend", _RANGES[0]), (hooks.SpecDiffHook, "_speculate", _RANGES[1]),
               (hooks, "select_levels", _RANGES[2]), (FeatureHistory, "assemble", _RANGES[2]),
               (FeatureHistory, "update", _RANGES[2]), (TokenImportance, "score", _RANGES[2])]
    saved = []
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if common.DEV == "cuda" else [])
    try:
        for owner, attr, label in patches:
            fn, inner = wrapped(owner, attr, label)
            saved.append((owner, attr, fn))
            setattr(owner, attr, inner)
        sched = make_scheduler()
        with sd.apply(tr, sd.SpecDiffConfig(), scheduler=sched, guidance_scale=guidance) as h:
            step_times = _step_times(h, lambda: loop(sched))  # also the warm-up of the profiled run
            common.sync()
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                loop(sched)
                common.sync()
                wall = time.perf_counter() - t0
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)
    events = prof.key_averages()

    def dev(e, self_only=False):  # CUDA microseconds (CPU ones in a CPU smoke run)
        if common.DEV != "cuda":
            return float(e.self_cpu_time_total if self_only else e.cpu_time_total)
        names = (("self_device_time_total", "self_cuda_time_total") if self_only
                 else ("device_time_total", "cuda_time_total"))
        for n in names:
            if hasattr(e, n):
                return float(getattr(e, n))
        return 0.0

    ops = [e for e in events if e.device_type == DeviceType.CPU and not e.key.startswith("specdiff::")]
    kernels = [e for e in events if e.device_type != DeviceType.CPU] if common.DEV == "cuda" else []
    total_us = sum(dev(e, self_only=True) for e in (kernels if common.DEV == "cuda" else ops))

    def top(rows, self_only):
        rows = sorted(rows, key=lambda e: dev(e, self_only), reverse=True)[:15]
        return [{"name": e.key[:100], "cuda_ms": dev(e, self_only) / 1e3, "calls": e.count,
                 "share": dev(e, self_only) / total_us if total_us else None} for e in rows]

    ranges = {}
    for e in events:
        if e.key in _RANGES:
            ranges[e.key] = {"cuda_ms": dev(e) / 1e3, "calls": e.count, "cpu_ms": e.cpu_time_total / 1e3,
                             "share": dev(e) / total_us if total_us else None}
    return {"wall_s": wall, "cuda_kernel_ms": total_us / 1e3, "time_unit": "cuda" if common.DEV == "cuda" else "cpu",
            "busy_fraction": total_us / 1e6 / wall, "step_times": step_times, "ranges": ranges,
            "top_ops_by_self_cuda": top(ops, True), "top_kernels": top(kernels, True), "ok": True}


def _ops_per_call(tr, loop, make_scheduler, guidance, steps) -> dict:
    """ATen operators dispatched per transformer call (a proxy for host time; counted on the device):
    the stock loop per step (scheduler included) and SpecDiff's full, cached-with-scoring and cached
    steps (median), by the same code as tests/specdiff/test_method_hostops.py."""
    import foretell.specdiff as sd
    from foretell.specdiff.opcount import OpCounter, count_per_call

    with OpCounter() as stock:
        loop(make_scheduler())
    sched = make_scheduler()
    with sd.apply(tr, sd.SpecDiffConfig(), scheduler=sched, guidance_scale=guidance) as h:
        rows = count_per_call(h, lambda: loop(sched))
    groups = {"full": [r for r in rows if r["full"] and r["step"] != 0],
              "cached_scoring": [r for r in rows if not r["full"] and r["record"]],
              "cached": [r for r in rows if not r["full"] and not r["record"]]}
    out = {"stock_per_step": stock.total / steps, "step0_with_speculative": rows[0]["ops"] if rows else None}
    for name, rs in groups.items():
        out[name] = float(np.median([r["ops"] for r in rs])) if rs else None
    cached = groups["cached_scoring"] or groups["cached"]
    if cached:
        top = cached[-1]["counts"].most_common(12)
        out["cached_top_ops"] = dict(top)
    out["ok"] = True
    return out


def _step_times(handle, run_loop) -> dict:
    """One run with the device synchronised around every transformer call: per kind of step (full,
    cached, step 0 with the speculative pass) the median wall ms of the call and of its host part
    (the time until the call returns without waiting for the device; close to the wall time means
    the step is bound by Python and kernel launches, not by the GPU)."""
    hook = handle._hook
    inner = hook.forward_call
    rows = []

    def timed_call(call):
        common.sync()
        t0 = time.perf_counter()
        result = inner(call)
        t1 = time.perf_counter()
        common.sync()
        t2 = time.perf_counter()
        last = hook.run.per_step[-1] if hook.run is not None and hook.run.per_step else {}
        rows.append((last.get("step"), bool(last.get("full")), 1e3 * (t1 - t0), 1e3 * (t2 - t0)))
        return result

    hook.forward_call = timed_call
    try:
        run_loop()
    finally:
        del hook.forward_call
    groups = {"step0_with_speculative": [r for r in rows if r[0] == 0],
              "full": [r for r in rows if r[1] and r[0] != 0], "cached": [r for r in rows if not r[1]]}
    out = {}
    for name, rs in groups.items():
        if rs:
            out[name] = {"calls": len(rs), "wall_ms": float(np.median([r[3] for r in rs])),
                         "host_ms": float(np.median([r[2] for r in rs]))}
    out["total_ms"] = float(sum(r[3] for r in rows))
    return out
