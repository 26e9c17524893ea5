import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from foretell.core.errors import ForetellError
from foretell.nifa.blocks import GCNBlock
from foretell.nifa.features import FeatureConfig, FeatureObjective, finalize_features, init_features, optimise_features
from foretell.nifa.graph import gcn_norm
from foretell.nifa.injection import append_nodes, injected_groups, injection_edges
from foretell.nifa.targets import select_targets
from foretell.nifa.uncertainty import BayesianGCN, UncertaintyConfig, node_uncertainty


def toy_graph(n=60, f=8, seed=0, sparse=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sens = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 4, (n, f), generator=g).float() + y[:, None]
    src = torch.randint(0, n, (3 * n,), generator=g)
    dst = torch.randint(0, n, (3 * n,), generator=g)
    keep = src != dst
    ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    ei = torch.unique(ei, dim=1)
    data = Data(x=x.to_sparse_csr() if sparse else x, y=y, sens=sens, edge_index=ei, num_nodes=n,
                integer_features=True)
    perm = torch.randperm(n, generator=g)
    data.train_mask = torch.zeros(n, dtype=torch.bool)
    data.train_mask[perm[: n // 2]] = True
    data.val_mask = torch.zeros(n, dtype=torch.bool)
    data.val_mask[perm[n // 2: 3 * n // 4]] = True
    data.test_mask = ~(data.train_mask | data.val_mask)
    return data


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_block_forward_matches_full_graph(mode):
    data = toy_graph()
    cfg = UncertaintyConfig(hidden=16, num_masks=5)
    model = BayesianGCN(8, 2, cfg, torch.Generator().manual_seed(1))
    prop = gcn_norm(data.edge_index, data.num_nodes)
    nodes = np.array([3, 10, 20])
    block = GCNBlock(prop, data.x, nodes, mode)
    assert block.layer1.mode == mode
    out = model(block)
    p = torch.from_numpy(prop.toarray())
    ref = []
    for t in range(5):
        h = torch.relu(p @ data.x @ (model.w1 * model.m1[t]))
        ref.append((p @ h @ (model.w2 * model.m2[t]))[nodes])
    assert torch.allclose(out, torch.stack(ref, 1), atol=1e-5)


def test_uncertainty_ordering_known_case():
    # node 0 is isolated with all-zero features: every mask outputs logits 0 -> softmax uniform ->
    # variance exactly 0, so it must be the least uncertain node; node 1 has the largest features
    data = toy_graph(n=40)
    keep = (data.edge_index != 0).all(0)
    data.edge_index = data.edge_index[:, keep]
    data.x[0] = 0
    train = np.flatnonzero(data.train_mask.numpy())
    nodes = np.arange(40)
    res = node_uncertainty(data, train, nodes, UncertaintyConfig(hidden=16, num_masks=6, epochs=5), seed=0)
    unc = res["uncertainty"]
    assert unc[0] == pytest.approx(0.0, abs=1e-12)
    assert (unc[1:] > 0).all() and np.argmin(unc) == 0
    assert res["epochs"] == 5


def test_targets_are_top_k_per_group():
    y = np.array([0, 1, 0, 1, -1, 0, 1, 0, 1, 1])
    s = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    unc = np.array([.1, .9, .5, .3, 5., .2, .8, .6, .1, 9.])
    t = select_targets(unc, y, s, 0.5)
    assert t[0].tolist() == [1, 2]          # group 0 labelled: 0,1,2,3 -> top 2 by uncertainty
    assert t[1].tolist() == [6, 7]          # group 1: 5,6,7,8 ; node 9 has unknown s, node 4 no label
    with pytest.raises(ForetellError):
        select_targets(unc, y, s, 0)


def test_injection_budget_symmetry_distinct_targets():
    targets = {0: np.arange(0, 20), 1: np.arange(20, 35)}
    groups = injected_groups(7)
    assert groups.tolist() == [1, 1, 1, 0, 0, 0, 0]
    e = injection_edges(100, groups, targets, 10, np.random.default_rng(0))
    assert e.shape == (2, 2 * 7 * 10)
    pairs = set(zip(*e.tolist()))
    assert all((b, a) in pairs for a, b in pairs)                       # undirected
    for i, g in enumerate(groups):
        nb = e[1][e[0] == 100 + i]
        assert len(nb) == 10 and len(set(nb.tolist())) == 10                 # d distinct targets
        assert set(nb.tolist()) <= set(targets[int(g)].tolist())            # of its own group
    with pytest.raises(ForetellError, match="exceeds"):
        injection_edges(100, groups, targets, 16, np.random.default_rng(0))


def poisoned_objective(sparse: bool, block_mode: str = "auto"):
    """The toy graph with 4 injected nodes (3 edges each to targets of their group) and the
    feature objective on its training nodes."""
    data = toy_graph(sparse=sparse)
    groups = injected_groups(4)
    tg = {g: np.flatnonzero(data.sens.numpy() == g)[:10] for g in (0, 1)}
    edges = injection_edges(data.num_nodes, groups, tg, 3, np.random.default_rng(0))
    pois = append_nodes(data, edges, torch.zeros(4, 8), 4)
    train = np.flatnonzero(data.train_mask.numpy())
    return FeatureObjective(pois, data.num_nodes, groups, train, FeatureConfig(hidden=16),
                            torch.Generator().manual_seed(0), block_mode=block_mode)


@pytest.mark.parametrize("sparse", [False, True])
def test_two_hop_cache_is_exact(sparse):
    obj = poisoned_objective(sparse)
    x = torch.rand(4, 8, requires_grad=True)
    obj.freeze(x.detach())
    fast, _ = obj.fast_loss(x)
    g_fast, = torch.autograd.grad(fast, x)
    full, _ = obj.full_loss(x)
    g_full, = torch.autograd.grad(full, x)
    assert torch.allclose(fast, full, atol=1e-5) and torch.allclose(g_fast, g_full, atol=1e-5)
    x2 = (x.detach() + 0.3).requires_grad_(True)          # still exact after the features move
    assert torch.allclose(obj.fast_loss(x2)[0], obj.full_loss(x2)[0], atol=1e-5)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_surrogate_block_matches_whole_graph(mode):
    """The surrogate's training-node logits from the cached 2-hop block equal the whole-graph GCN,
    and so do the gradients of the surrogate's weights and of the injected features."""
    obj = poisoned_objective(True, mode)
    assert obj.block.layer1.mode == mode and len(obj.block.var_nodes) > 0
    x = torch.rand(4, 8, requires_grad=True)
    grads = []
    for fn in (obj.surrogate_logits, obj.full_logits):
        out = fn(x)
        grads.append((out, *torch.autograd.grad(out.square().sum(), [x, obj.model.w1, obj.model.b2])))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_fairness_gaps_hand_computed():
    from foretell.nifa.features import fairness_gaps

    logits = torch.tensor([[1., 2.], [3., 0.], [0., 1.], [2., 2.]])
    y, sens = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 0])
    l_sp, l_eo = fairness_gaps(logits, y, sens, 2)
    # group means [2, 1] vs [1, 1.5]; NIFA code's L_EO: class-c logit over true class c: (1-0)^2, (0-2)^2
    assert float(l_sp) == pytest.approx(0.625) and float(l_eo) == pytest.approx(2.5)
    assert float(fairness_gaps(logits, y, sens, 2, "all_logits")[1]) == pytest.approx(1.75)
    # opt-in directional variant: signed squares d*|d| times the per-class direction
    # SP gaps (s1 - s0) per class: [1, -0.5]; EO gaps: class 0 1-0 = 1, class 1 0-2 = -2
    d = torch.tensor([1., -1.])
    l_sp_d, l_eo_d = fairness_gaps(logits, y, sens, 2, direction=d)
    assert float(l_sp_d) == pytest.approx((1 * 1 + -1 * -0.25) / 2) and float(l_eo_d) == pytest.approx((1 + 4) / 2)
    l_sp_r, l_eo_r = fairness_gaps(logits, y, sens, 2, direction=-d)
    assert float(l_sp_r) == pytest.approx(-float(l_sp_d)) and float(l_eo_r) == pytest.approx(-2.5)


def test_label_gap_direction():
    from foretell.nifa.features import label_gap_direction

    y, sens = torch.tensor([1, 0, 0, 1, 1, 0]), torch.tensor([1, 1, 1, 0, 0, 0])
    # P(y=1|s=1) = 1/3 < P(y=1|s=0) = 2/3 -> class 1: -1, class 0: +1
    assert label_gap_direction(y, sens, 2).tolist() == [1.0, -1.0]


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_block_gradient_matches_dense(mode):
    data = toy_graph(sparse=True)
    cfg = UncertaintyConfig(hidden=16, num_masks=4)
    model = BayesianGCN(8, 2, cfg, torch.Generator().manual_seed(1))
    prop = gcn_norm(data.edge_index, data.num_nodes)
    nodes = np.arange(0, 60, 3)
    model(GCNBlock(prop, data.x, nodes, mode)).square().sum().backward()
    g_block = model.w1.grad.clone()
    model.w1.grad = None
    p, x = torch.from_numpy(prop.toarray()), data.x.to_dense()
    ref = sum((p @ torch.relu(p @ x @ (model.w1 * model.m1[t])) @ (model.w2 * model.m2[t]))[nodes].square().sum()
              for t in range(4))
    ref.backward()
    assert torch.allclose(g_block, model.w1.grad, atol=1e-4)


def test_feature_box_and_rounding():
    lo, hi = torch.tensor([0., -1., 2.]), torch.tensor([1., 1., 5.])
    x0 = init_features(2000, 3, torch.Generator().manual_seed(0))
    # the raw N(0.5, 0.5^2) draw, not clamped (the box applies after each feature step, as in the paper)
    assert abs(float(x0.mean()) - 0.5) < 0.03 and abs(float(x0.std()) - 0.5) < 0.03
    assert (x0 < lo).any() and (x0[:, 0] > hi[0]).any()
    assert torch.equal(x0, init_features(2000, 3, torch.Generator().manual_seed(0)))
    out = finalize_features(torch.tensor([[0.4, -3., 4.6], [7., 0.49, 2.2]]), lo, hi, integer=True)
    assert out.tolist() == [[0., -1., 5.], [1., 0., 2.]]
    assert finalize_features(torch.tensor([[0.4, 0.3, 3.3]]), lo, hi, integer=False).tolist()[0][0] == pytest.approx(0.4)


def test_feature_optimisation_raises_surrogate_gap():
    data = toy_graph(n=80)
    groups = injected_groups(6)
    tg = {g: np.flatnonzero(data.sens.numpy() == g)[:20] for g in (0, 1)}
    edges = injection_edges(data.num_nodes, groups, tg, 8, np.random.default_rng(0))
    pois = append_nodes(data, edges, torch.zeros(6, 8), 6)
    lo, hi = data.x.min(0).values, data.x.max(0).values
    train = np.flatnonzero(data.train_mask.numpy())
    cfg = FeatureConfig(hidden=16, max_iter=3, max_step=20, lr=0.05, beta=8.0)
    x, hist = optimise_features(pois, data.num_nodes, groups, train, cfg, lo, hi, True, torch.Generator().manual_seed(0))
    assert x.shape == (6, 8) and torch.equal(x, x.round()) and (x >= lo).all() and (x <= hi).all()
    assert len(hist) == 3 and all(np.isfinite(h["sp"]) for h in hist)


def test_defense_drops_most_uncertain():
    from foretell.nifa.defense import apply_defense

    data = toy_graph(n=20)
    unc = np.arange(20, dtype=float)
    out = apply_defense(data, 0.2, unc)
    train = np.flatnonzero(data.train_mask.numpy())
    dropped = set(train) - set(np.flatnonzero(out.train_mask.numpy()))
    assert dropped == set(train[np.argsort(-unc[train])][:2]) and data.train_mask.sum() == 10
    with pytest.raises(ForetellError):
        apply_defense(data, 1.0, unc)


def test_defense_scores_training_nodes_of_unknown_sensitive_value():
    # DBLP has training authors of unknown gender: they are not target candidates, but the defense
    # ranks every training node, so the uncertainty must cover them too (it stopped with an error before)
    from foretell.nifa.attack import NIFA, NIFAConfig
    from foretell.nifa.defense import apply_defense

    data = toy_graph(n=40)
    train = np.flatnonzero(data.train_mask.numpy())
    data.sens[torch.as_tensor(train[:5])] = -1
    nifa = NIFA(NIFAConfig(uncertainty_epochs=3, num_injected=2, edges_per_injected=2))
    cand = nifa.uncertainty(data)["uncertainty"]
    assert np.isnan(cand[train[:5]]).all()                # candidates only: unknown gender left out
    with pytest.raises(ForetellError, match="every training node"):
        apply_defense(data, 0.5, cand)
    unc = nifa.uncertainty(data, nodes=train)["uncertainty"]
    assert np.isfinite(unc[train]).all() and np.isnan(np.delete(unc, train)).all()
    out = apply_defense(data, 0.5, unc)
    assert int(out.train_mask.sum()) == len(train) - len(train) // 2


def test_baselines_budgets():
    from foretell.nifa.baselines import fagnn_injection, random_injection

    data = toy_graph(n=50)
    pois, idx = random_injection(data, 4, 5, 0)
    assert pois.num_nodes == 54 and pois.edge_index.shape[1] == data.edge_index.shape[1] + 40
    assert idx.tolist() == [50, 51, 52, 53] and (pois.y[50:] == -1).all() and not pois.train_mask[50:].any()
    f, added = fagnn_injection(data, 0, rate=0.2)
    new = f.edge_index[:, data.edge_index.shape[1]:]
    assert added == round(0.2 * data.edge_index.shape[1] / 2) and new.shape[1] == 2 * added
    u, v = new[:, :added]
    assert ((data.y[u] == 1) & (data.sens[u] == 1) & (data.y[v] == 0) & (data.sens[v] == 0)).all()


@pytest.mark.parametrize("mode,threads", [("dense", 1), ("sparse", 1), ("sparse", 3)])
def test_masked_logits_match_autograd_reference(mode, threads):
    # the hand-written forward/backward with masks split over threads must equal BayesianGCN.forward
    # + autograd (a wrong relu mask, transpose or mask product in the backward breaks the gradients)
    data = toy_graph(sparse=True)
    model = BayesianGCN(8, 2, UncertaintyConfig(hidden=16, num_masks=5), torch.Generator().manual_seed(2))
    block = GCNBlock(gcn_norm(data.edge_index, data.num_nodes), data.x, np.arange(0, 60, 2), mode)
    target = torch.randn(30, 5, 2, generator=torch.Generator().manual_seed(3))
    grads = []
    for out in (lambda: model(block), lambda: model.train_logits(block, threads)):
        model.zero_grad()
        logits = out()
        (logits * target).sum().backward()
        grads.append((logits.detach(), model.w1.grad.clone(), model.w2.grad.clone()))
    for ref, new in zip(grads[0], grads[1]):
        assert torch.allclose(ref, new, rtol=1e-5, atol=1e-6)
    assert grads[0][1].abs().sum() > 0


def test_bayesian_init_gain_is_official_relu_gain():
    # official code: xavier_uniform_(gain=calculate_gain('relu')) -> bound sqrt(2) * sqrt(6 / (fan_in + fan_out))
    w = BayesianGCN(300, 2, UncertaintyConfig(hidden=100), torch.Generator().manual_seed(0)).w1.detach()
    bound = torch.nn.init.calculate_gain("relu") * (6 / 400) ** 0.5
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    w1 = BayesianGCN(300, 2, UncertaintyConfig(hidden=100, init_gain=1.0), torch.Generator().manual_seed(0)).w1.detach()
    assert float(w1.abs().max()) <= (6 / 400) ** 0.5
