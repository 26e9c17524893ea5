"""One small NIFA attack on a real DBLP subgraph: the victim GCN's fairness gap must grow."""

import pytest
import torch

from foretell.core.errors import ForetellError


def dblp_subgraph(num=400):
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import labelled_subgraph

    try:
        d = load_preset("dblp")
    except ForetellError as exc:
        pytest.skip(f"shared DBLP data not available: {exc}")
    return labelled_subgraph(d, num, seed=0)


def test_nifa_raises_gcn_fairness_gap_on_real_subgraph(tmp_path):
    from foretell.nifa import NIFA, NIFAConfig, PoisonedGraph, train_victim
    from foretell.nifa.victims import VictimConfig

    g = dblp_subgraph()
    cfg = NIFAConfig(num_injected=20, edges_per_injected=10, uncertainty_epochs=20, max_iter=2, max_step=20, seed=0)
    poisoned = NIFA(cfg).attack(g)
    assert poisoned.data.num_nodes == g.num_nodes + 20
    assert poisoned.data.edge_index.shape[1] == g.edge_index.shape[1] + 2 * 20 * 10
    assert g.num_nodes == 400                                   # the input is not modified
    vc = VictimConfig(max_epochs=100, min_epochs=40, patience=20)
    clean = train_victim("gcn", g, 0, vc)
    attacked = train_victim("gcn", poisoned.data, 0, vc)
    assert attacked["sp"] > clean["sp"] + 0.03, (clean, attacked)
    assert attacked["eo"] > clean["eo"], (clean, attacked)
    # save / load round trip keeps the graph and the injected ids
    back = PoisonedGraph.load(poisoned.save(tmp_path / "p.pt"))
    assert torch.equal(back.injected_index, poisoned.injected_index)
    assert torch.equal(back.data.edge_index, poisoned.data.edge_index)
    assert torch.equal(back.data.x.to_dense(), poisoned.data.x.to_dense())
