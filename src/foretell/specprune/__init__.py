"""SpecPrune-VLA: action-aware visual-token pruning for VLA models.

``apply(vla, SpecPruneConfig(...))`` returns a :class:`~foretell.specprune.handle.PruningHandle`;
``handle.remove()`` restores the model. ``foretell.specprune.methods.build_method`` builds the
baselines and peers (full, fastv, vla_cache, random) behind the same handle type.
"""

from __future__ import annotations

from foretell.specprune.config import SpecPruneConfig  # light: dataclasses only


def adapter_for(vla, adapter=None):
    """The adapter for ``vla``: the one given, or the built-in one for ``OFTStyleVLA``."""
    from foretell.core.errors import ForetellError
    from foretell.specprune.adapter import OFTStyleAdapter, VLAAdapter
    from foretell.specprune.model import OFTStyleVLA

    if adapter is not None:
        if not isinstance(adapter, VLAAdapter):
            raise ForetellError(f"adapter must be a foretell.specprune.adapter.VLAAdapter, got {type(adapter).__name__}")
        return adapter
    if isinstance(vla, OFTStyleVLA):
        return OFTStyleAdapter(vla)
    raise ForetellError(f"no built-in adapter for {type(vla).__name__}; pass adapter=PrismaticOFTAdapter(...) or another VLAAdapter")


def apply(vla, config=None, *, adapter=None):
    """Apply SpecPrune-VLA to ``vla``; returns the handle (``config`` defaults to ``SpecPruneConfig()``)."""
    from foretell.core.errors import ForetellError
    from foretell.specprune.config import SpecPruneConfig
    from foretell.specprune.engine import PruningPolicy
    from foretell.specprune.handle import PruningHandle
    from foretell.specprune.pruning import SpecPrunePolicy

    cfg = SpecPruneConfig() if config is None else config
    if not isinstance(cfg, SpecPruneConfig):
        raise ForetellError(f"config must be a SpecPruneConfig, got {type(cfg).__name__}")
    cfg = cfg.for_graphs(cfg.cuda_graphs)
    ad = adapter_for(vla, adapter)
    n_layers = len(ad.layers)
    cfg.check_model(n_layers, ad.patches_per_view, len(ad.views))
    policy = SpecPrunePolicy(cfg, ad, n_layers) if cfg.enabled else PruningPolicy()
    return PruningHandle(ad, policy, "specprune" if cfg.enabled else "full", cfg.cuda_graphs)


__all__ = ["apply", "adapter_for", "SpecPruneConfig"]
