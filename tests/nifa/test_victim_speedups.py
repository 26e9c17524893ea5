import copy

import pytest
import torch
import torch.nn.functional as F

from torch_geometric.data import Data

from foretell.nifa.victims import MODELS, ConstFeatureLinear, bind_constant_graph, sparse_adjacency


def toy_graph(n=40, f=8, seed=0):
    """Random graph with sparse integer features; node 0 is isolated."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (torch.randint(0, 3, (n, f), generator=g) * (torch.rand(n, f, generator=g) < 0.4)).float()
    src, dst = torch.randint(1, n, (3 * n,), generator=g), torch.randint(1, n, (3 * n,), generator=g)
    keep = src != dst
    ei = torch.unique(torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])]), dim=1)
    train = torch.zeros(n, dtype=torch.bool)
    train[: n // 2] = True
    return Data(x=x.to_sparse_csr(), y=y, edge_index=ei, num_nodes=n, train_mask=train)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bound_victim_is_the_same_function(name):
    """bind_constant_graph (scipy first layer, constant mean adjacency) changes speed, not numbers:
    same logits and same gradients as the plain PyG model on a graph with an isolated node."""
    data = toy_graph()
    torch.manual_seed(0)
    plain = MODELS[name](8, 16, 2)
    bound = bind_constant_graph(copy.deepcopy(plain), data)
    assert any(isinstance(m, ConstFeatureLinear) for m in bound.modules())
    adj = sparse_adjacency(data)
    res = []
    for model in (plain, bound):
        out = model(data.x, adj)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        res.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(res[0][0], res[1][0], atol=1e-5)
    assert len(res[0][1]) == len(res[1][1])
    for a, b in zip(res[0][1], res[1][1]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_const_sparse_product_and_gradient(monkeypatch, threads):
    """ConstSparse @ w (row slices over a thread pool when threads > 1) equals the dense product,
    and so does its gradient."""
    import numpy as np
    import scipy.sparse as sp

    from foretell.nifa import blocks

    monkeypatch.setattr(blocks, "PARALLEL_MIN_WORK", 0)
    torch.set_num_threads(threads)
    m = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    cs = blocks.ConstSparse(m)
    assert len(cs.a.slices) > 1 and sum(s.shape[0] for s in cs.a.slices) == 50
    w = torch.rand(30, 7, requires_grad=True)
    out = cs @ w
    (g,) = torch.autograd.grad(out.square().sum(), w)
    w2 = w.detach().clone().requires_grad_(True)
    ref = torch.from_numpy(m.toarray()) @ w2
    (g_ref,) = torch.autograd.grad(ref.square().sum(), w2)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(g, g_ref, atol=1e-4)
