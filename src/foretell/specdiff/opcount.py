"""Count the ATen operators a SpecDiff run dispatches per transformer call (a proxy for host time:
on a GPU every operator costs a few microseconds of Python and dispatch, most of them a kernel launch).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts every ATen operator dispatched while active (views included), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Operators counted so far."""
        return sum(self.counts.values())


def count_stock_call(fn: Callable[[], object]) -> Counter:
    """Operators dispatched by ``fn()`` (e.g. one stock transformer call)."""
    with OpCounter() as counter:
        fn()
    return counter.counts


def count_per_call(handle, run: Callable[[], object]) -> list[dict]:
    """Run ``run()`` (a sampling loop) with SpecDiff ``handle`` applied and count the operators of every
    transformer call: one row per call with its ``step``, ``full``, ``record`` (whether the call scored
    attention for the next step), ``ops`` (total) and ``counts`` (by operator)."""
    hook = handle._hook
    inner = hook.forward_call
    rows: list[dict] = []

    def counted(call):
        with OpCounter() as counter:
            result = inner(call)
        last = hook.run.per_step[-1] if hook.run is not None and hook.run.per_step else {}
        step = last.get("step")
        record = step is not None and hook.run is not None and hook._needs_record(step)
        rows.append({"step": step, "full": bool(last.get("full")), "record": record,
                     "ops": counter.total, "counts": counter.counts})
        return result

    hook.forward_call = counted
    try:
        run()
    finally:
        del hook.forward_call
    return rows
