"""Count the tensor operations that make the host wait for the device (``count_host_syncs``).

On a GPU every read of a tensor's value on the host (``.item()``, ``.tolist()``, ``bool(t)``, a copy
to the CPU, ``nonzero`` / ``unique`` / boolean-mask indexing, whose output size depends on the data)
waits until all queued kernels have finished; each one stalls the launch queue. The counter is a
``TorchFunctionMode``, so it sees the same calls on the CPU, where the engine's tests assert a
per-query bound that holds on any device.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
          torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu,
          torch.Tensor.nonzero, torch.nonzero, torch.Tensor.unique, torch.unique, torch.argwhere,
          torch.masked_select, torch.Tensor.masked_select, torch.equal, torch.Tensor.equal,
          torch.unique_consecutive, torch.bincount, torch.Tensor.bincount}


def _bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in items)


def _is_sync(func, args, kwargs) -> bool:
    if func in _READS:
        return True
    if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and len(args) > 1:
        return func is torch.Tensor.__getitem__ and _bool_index(args[1])
    if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
        return torch.is_tensor(args[1] if len(args) > 1 else kwargs.get("repeats")) and kwargs.get("output_size") is None
    if func is torch.Tensor.to:  # a copy to the host (on the CPU a same-device ``to`` is no read)
        dev = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
        return dev is not None and torch.device(dev).type == "cpu" and args[0].device.type != "cpu"
    return False


class count_host_syncs(TorchFunctionMode):
    """Context manager: ``counts`` (name -> calls) of the host-reading operations run inside it;
    ``total`` is their sum and ``ops`` the number of torch calls of any kind."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if _is_sync(func, args, kwargs):
            self.counts[getattr(func, "__name__", str(func))] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
