"""Method registry: every compared method behind the same :class:`PruningHandle` type.

``full`` runs the unpruned computation through the same engine (same timing bookkeeping);
``specprune`` / ``specprune_no_global`` / ``specprune_no_controller`` are SpecPrune-VLA and its
ablations; ``fastv``, ``vla_cache`` and ``random`` are peers at a fixed visual-token budget; ``fastv_layer0``
(opt-in) is FastV pruned at SpecPrune's first pruning point, the peer at about the same MACs.
For a fair comparison pass the peers the mean ``visual_tokens_kept`` that ``specprune`` measured;
without ``token_budget`` the peers keep ``DEFAULT_BUDGET_FRACTION`` of the visual tokens.
"""

from __future__ import annotations

from foretell.core.errors import ForetellError

METHOD_NAMES = ("full", "specprune", "specprune_no_global", "specprune_no_controller", "fastv", "vla_cache", "random")
# opt-in (``--methods``), not in the default set: FastV pruned after layer 0, SpecPrune's first
# pruning point, so at the same budget it costs about SpecPrune's MACs (``fastv`` runs 3 of the 6
# testbed layers unpruned)
EXTRA_METHOD_NAMES = ("fastv_layer0",)
ALL_METHOD_NAMES = METHOD_NAMES + EXTRA_METHOD_NAMES
PEERS = ("fastv", "vla_cache", "random", "fastv_layer0")
DEFAULT_BUDGET_FRACTION = 0.3
FASTV_LAYER = 2


def build_method(name: str, vla, token_budget: int | None = None, seed: int = 0, config=None, adapter=None,
                 cuda_graphs=None):
    """Apply method ``name`` to ``vla`` and return its handle (call ``.remove()`` when done).

    ``config``: a SpecPruneConfig for the specprune variants (the ablation switches are forced on
    top of it). ``token_budget``: visual tokens kept by the peers; for specprune an optional cap.
    ``cuda_graphs``: replay runs of plain layers from CUDA graphs (see ``PruningHandle``); None:
    the config's ``cuda_graphs`` for the specprune variants, off for the others.
    """
    from foretell.specprune import adapter_for
    from foretell.specprune.config import SpecPruneConfig
    from foretell.specprune.engine import PruningPolicy
    from foretell.specprune.handle import PruningHandle
    from foretell.specprune.peers import FastVPolicy, RandomPolicy, VLACachePolicy
    from foretell.specprune.pruning import SpecPrunePolicy

    if name not in ALL_METHOD_NAMES:
        raise ForetellError(f"unknown method {name!r}; accepted: {', '.join(ALL_METHOD_NAMES)}")
    if config is not None and not isinstance(config, SpecPruneConfig):
        raise ForetellError(f"config must be a SpecPruneConfig, got {type(config).__name__}")
    import numbers

    if token_budget is not None and not (isinstance(token_budget, numbers.Integral) and not isinstance(token_budget, bool)):
        raise ForetellError(f"token_budget={token_budget!r} must be a whole number of visual tokens or None")
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)) or not 0 <= seed < 2**32:
        raise ForetellError(f"seed={seed!r} must be an integer in [0, 2**32)")
    ad = adapter_for(vla, adapter)
    n_layers = len(ad.layers)
    total = ad.patches_per_view * len(ad.views)
    if token_budget is not None and not 1 <= int(token_budget) <= total:
        raise ForetellError(f"token_budget={token_budget} must be between 1 and the {total} visual tokens of the model")
    peer_graphs = False if cuda_graphs is None else cuda_graphs
    if name == "full":
        return PruningHandle(ad, PruningPolicy(), name, peer_graphs)
    if name.startswith("specprune"):
        cfg = config if config is not None else SpecPruneConfig()
        changes = {"enabled": True}
        if token_budget is not None:
            changes["token_budget"] = int(token_budget)
        if name == "specprune_no_global":
            changes["use_global"] = False
        if name == "specprune_no_controller":
            changes["use_controller"] = False
        graphs = cfg.cuda_graphs if cuda_graphs is None else cuda_graphs
        cfg = cfg.replace(**changes).for_graphs(graphs)
        cfg.check_model(n_layers, ad.patches_per_view, len(ad.views))
        return PruningHandle(ad, SpecPrunePolicy(cfg, ad, n_layers), name, graphs)
    budget = int(token_budget) if token_budget is not None else max(1, int(round(DEFAULT_BUDGET_FRACTION * total)))
    if name == "fastv":
        if n_layers <= FASTV_LAYER + 1:
            raise ForetellError(f"fastv prunes after layer {FASTV_LAYER} and needs more than {FASTV_LAYER + 1} layers; the model has {n_layers}")
        return PruningHandle(ad, FastVPolicy(budget, FASTV_LAYER), name, peer_graphs)
    if name == "fastv_layer0":
        return PruningHandle(ad, FastVPolicy(budget, 0), name, peer_graphs)
    if name == "vla_cache":
        return PruningHandle(ad, VLACachePolicy(ad, budget, n_layers), name, peer_graphs)
    return PruningHandle(ad, RandomPolicy(budget, seed), name, peer_graphs)
