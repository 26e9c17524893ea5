"""NIFA: node-injection fairness attack on GNNs (Luo et al., NeurIPS 2024), on PyG.

    from foretell.nifa import NIFA, NIFAConfig, load_preset, add_split, train_victim
    data = add_split(load_preset("dblp"), seed=0)
    poisoned = NIFA(NIFAConfig.preset("dblp")).attack(data)     # -> PoisonedGraph
    print(train_victim("gcn", data, seed=0), train_victim("gcn", poisoned.data, seed=0))
"""

from foretell.nifa.attack import NIFA, NIFAConfig, PoisonedGraph
from foretell.nifa.baselines import fagnn_injection, random_injection
from foretell.nifa.defense import apply_defense
from foretell.nifa.evaluate import EvalConfig, evaluate
from foretell.nifa.loaders import load_dblp, load_fairgnn, load_graph, load_preset, load_pygdebias
from foretell.nifa.metrics import fairness_metrics
from foretell.nifa.splits import add_split
from foretell.nifa.victims import VICTIMS, VictimConfig, train_victim

__all__ = ["NIFA", "NIFAConfig", "PoisonedGraph", "EvalConfig", "evaluate", "VictimConfig", "train_victim",
           "VICTIMS", "fairness_metrics", "add_split", "apply_defense", "random_injection", "fagnn_injection",
           "load_graph", "load_preset", "load_dblp", "load_fairgnn", "load_pygdebias"]
