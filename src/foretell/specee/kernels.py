"""Linear layers through oneDNN with weights packed once: cheap multi-row passes on the CPU.

Why: speculative decoding pays for a verify pass over ``gamma + 1`` rows. With torch's default
CPU path (MKL sgemm) a float32 linear over 2-8 rows costs 1.6-1.8x one row on this machine, so a
5-row verify of SmolLM2 took 1.72x a one-token step and speculation could not pay. oneDNN with the
weight reordered once into its blocked layout (the path inductor's CPU freezing uses) streams the
weights once for all rows: measured here, a 5-row pass costs ~0.96x a one-row step and a one-row
step costs the same as with MKL (``scripts/specee/kernel_timing.py``).

:func:`apply_packed_linears` swaps the ``forward`` of every ``nn.Linear`` of a model for the packed
kernel and returns a handle whose :meth:`PackedLinears.remove` restores the model (once no other
handle holds the same modules); ``enabled`` switches the kernel off without unpacking (for
side-by-side timing). The packed copy follows the
weight: a weight changed in place or replaced is re-packed on the next call. Calls that need
autograd, or are not float32 CPU tensors, take the stock ``F.linear``.

Results equal ``F.linear`` up to float32 rounding (a different summation order); neither kernel is
bit-identical across row counts for every shape, so a multi-row verify can differ from one-row
decoding in the last bit either way.
"""

from __future__ import annotations

import os
import types
from functools import lru_cache

import torch
import torch.nn.functional as F

from foretell.core.errors import ForetellError

LINEAR_KERNELS = ("auto", "onednn", "torch")


@lru_cache(maxsize=1)
def onednn_available() -> bool:
    """True when this torch build has oneDNN's packed-weight linear (CPU, float32)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(4, 4), 2)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4), w, None, "none", [], "")
        return bool(torch.allclose(y, torch.full((2, 4), 4.0)))
    except (AttributeError, RuntimeError, TypeError):          # op missing or changed in this torch build
        return False


def physical_memory_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def linear_weight_bytes(*models: torch.nn.Module) -> int:
    """Bytes of the ``nn.Linear`` weights of ``models`` (what packing copies once more)."""
    return sum(m.weight.numel() * m.weight.element_size() for model in models for m in model.modules()
               if isinstance(m, torch.nn.Linear))


def resolve_linear_kernel(name: str, device: torch.device, dtype: torch.dtype, weight_bytes: int = 0) -> str:
    """``auto`` -> ``onednn`` for a float32 model on the CPU when available and the packed copy
    (``weight_bytes``) takes at most a quarter of the machine's RAM, else ``torch``."""
    if name not in LINEAR_KERNELS:
        raise ForetellError(f"linear_kernel must be one of {', '.join(LINEAR_KERNELS)}, got {name!r}")
    usable = device.type == "cpu" and dtype == torch.float32 and onednn_available()
    if name == "auto":
        ram = physical_memory_bytes()
        fits = ram is None or weight_bytes <= ram // 4
        return "onednn" if usable and fits else "torch"
    if name == "onednn" and not usable:
        why = ("this torch build has no oneDNN packed linear" if not onednn_available()
               else f"the model is {str(dtype).replace('torch.', '')} on {device}")
        raise ForetellError(f"linear_kernel='onednn' needs a float32 model on the CPU, but {why}; "
                            "use linear_kernel='auto' or 'torch'")
    return name


class _Packed:
    """One module's packed weight, the weight (object, version) it was packed from, and the handles
    that hold the module patched (the patch is shared: two SpecEE objects on one model)."""

    __slots__ = ("weight", "version", "packed", "owners")

    def __init__(self):
        self.weight, self.version, self.packed, self.owners = None, -1, None, []


class PackedLinears:
    """Handle over the patched ``nn.Linear`` modules; see the module docstring."""

    def __init__(self, batch_hint: int = 5):
        self.batch_hint = int(batch_hint)
        self.enabled = True
        self.modules: list[torch.nn.Linear] = []

    @staticmethod
    def _forward(mod: torch.nn.Linear, state: _Packed, x: torch.Tensor) -> torch.Tensor:
        w = mod.weight
        if (not all(h.enabled for h in state.owners) or x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32
                or x.numel() == 0 or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
            return F.linear(x, w, mod.bias)
        if state.weight is not w or state.version != w._version:
            state.packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), state.owners[0].batch_hint)
            state.weight, state.version = w, w._version
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), state.packed, mod.bias, "none", [], "")
        return y.view(*shape[:-1], y.shape[-1])

    def remove(self) -> None:
        """Let go of the patched modules; a module no other handle holds gets its class ``forward``
        back and drops its packed copy."""
        for mod in self.modules:
            state = mod.__dict__["forward"]._foretell_packed
            state.owners.remove(self)
            if not state.owners:
                del mod.forward
        self.modules = []


def apply_packed_linears(*models: torch.nn.Module, batch_hint: int = 5) -> PackedLinears:
    """Run the ``nn.Linear`` layers of ``models`` through oneDNN packed weights; returns the handle.

    A module another handle already patched keeps that patch and is held by both: it stays
    packed until every holder removed it, and runs the stock kernel while any holder is switched
    off. Packing happens on first use (the packed copies add the linear weights' size in memory
    once more). ``batch_hint``: the row count oneDNN packs for (a verify pass of gamma 4 has 5
    rows); any row count works."""
    if not onednn_available():
        raise ForetellError("this torch build has no oneDNN packed linear; use linear_kernel='torch'")
    handle = PackedLinears(batch_hint)
    for mod in (m for model in models for m in model.modules()):
        if not isinstance(mod, torch.nn.Linear) or mod in handle.modules:
            continue
        state = getattr(mod.__dict__.get("forward"), "_foretell_packed", None)
        if state is None:
            state = _Packed()

            def forward(self, x, _state=state):
                return PackedLinears._forward(self, _state, x)

            forward._foretell_packed = state
            mod.forward = types.MethodType(forward, mod)
        state.owners.append(handle)
        handle.modules.append(mod)
    return handle
