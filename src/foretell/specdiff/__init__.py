"""SpecDiff: self-speculative multi-level feature caching for diffusion transformers.

    from foretell.specdiff import SpecDiffConfig, apply
    handle = apply(pipe, SpecDiffConfig(cache_rate=0.8))   # or apply(transformer, cfg, scheduler=s, guidance_scale=g)
    images = pipe(...).images
    print(handle.stats()); handle.remove()

Importing this package is cheap; torch/diffusers load when ``apply`` or ``SpecDiffHandle`` is used.
"""

from __future__ import annotations

from foretell.specdiff.config import SpecDiffConfig

__all__ = ["SpecDiffConfig", "SpecDiffHandle", "apply"]


def __getattr__(name: str):
    if name in ("apply", "SpecDiffHandle"):
        from foretell.specdiff import handle

        return getattr(handle, name)
    raise AttributeError(name)
