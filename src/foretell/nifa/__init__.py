"""NIFA: node-injection fairness attack on GNNs (Luo et al., NeurIPS 2024), on PyG.

    from foretell.nifa import NIFA, NIFAConfig, load_preset, add_split, train_victim
    data = add_split(load_preset("dblp"), seed=0)
    poisoned = NIFA(NIFAConfig.preset("dblp")).attack(data)     # -> PoisonedGraph
    print(train_victim("gcn", data, seed=0), train_victim("gcn", poisoned.data, seed=0))

Names are imported lazily so that ``foretell nifa --help`` does not import torch.
"""

import importlib

_EXPORTS = {
    "NIFA": "attack", "NIFAConfig": "attack", "PoisonedGraph": "attack",
    "EvalConfig": "evaluate", "evaluate": "evaluate",
    "VictimConfig": "victims", "train_victim": "victims", "VICTIMS": "victims",
    "fairness_metrics": "metrics", "add_split": "splits", "labelled_subgraph": "splits",
    "apply_defense": "defense", "random_injection": "baselines", "fagnn_injection": "baselines",
    "load_graph": "loaders", "load_preset": "loaders", "load_dblp": "loaders", "load_fairgnn": "loaders",
    "load_pygdebias": "loaders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"foretell.nifa.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'foretell.nifa' has no attribute {name!r}")
