"""Side-by-side timing of generation variants in rotating order (the sweep scripts' protocol).

Every variant runs on every prompt; the order rotates by one variant per prompt so that no variant
always runs first (warm caches) or last. Speed-up is tokens/s against the ``reference`` variant
timed in the same run; agreement is position-wise against the reference's tokens.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

# a variant: (prompt index, prompt ids (1, n)) -> (generated ids (1, n + new), decode/verify passes it took);
# the index lets a sampling variant seed its generator per prompt
Variant = Callable[[int, torch.Tensor], tuple[torch.Tensor, int]]


def time_in_rotation(variants: dict[str, Variant], inputs: list[torch.Tensor], *, reference: str = "full",
                     device: torch.device | None = None) -> dict[str, dict]:
    """Per variant ``tokens_per_s``, ``speedup`` (over ``reference``), ``tokens_per_pass``,
    ``agreement`` and ``new_tokens``; CUDA work is synchronised before each clock read."""
    names = list(variants)
    if reference not in variants:
        raise ValueError(f"reference variant {reference!r} is not among {names}")
    secs = dict.fromkeys(names, 0.0)
    toks = dict.fromkeys(names, 0)
    passes = dict.fromkeys(names, 0)
    agree, ref_tokens = dict.fromkeys(names, 0), 0
    for pi, ids in enumerate(inputs):
        order = names[pi % len(names):] + names[: pi % len(names)]
        outs = {}
        for name in order:
            t0 = time.perf_counter()
            out, n_passes = variants[name](pi, ids)
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize()
            secs[name] += time.perf_counter() - t0
            outs[name] = out[0, ids.shape[1]:].tolist()
            toks[name] += len(outs[name])
            passes[name] += n_passes
        ref = outs[reference]
        ref_tokens += len(ref)
        for name, got in outs.items():
            agree[name] += sum(1 for i, t in enumerate(ref) if i < len(got) and got[i] == t)
    base = toks[reference] / secs[reference]
    return {n: {"tokens_per_s": toks[n] / secs[n], "speedup": toks[n] / secs[n] / base,
                "tokens_per_pass": toks[n] / max(1, passes[n]), "agreement": agree[n] / max(1, ref_tokens),
                "new_tokens": toks[n]}
            for n in names}
