"""FairSIN victim: heterogeneous-neighbour targets, the low-rank neutralised input, training."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from foretell.core.errors import ForetellError
from foretell.nifa.blocks import ConstSparse
from foretell.nifa.fairsin import heterogeneous_neighbour_mean, neutralised_projection
from foretell.nifa.graph import to_scipy
from foretell.nifa.victims import VictimConfig, train_victim


def test_heterogeneous_neighbour_mean_hand_computed():
    # path 0-1-2-3 plus edge 1-3; sens 0,1,0,-1 -> node 0: {1}; node 1: {0, 2}; node 2: {1}; node 3: unknown
    ei = torch.tensor([[0, 1, 1, 2, 2, 3, 1, 3], [1, 0, 2, 1, 3, 2, 3, 1]])
    x = torch.tensor([[1., 0.], [0., 2.], [3., 4.], [9., 9.]])
    data = Data(x=x, edge_index=ei, sens=torch.tensor([0, 1, 0, -1]), num_nodes=4)
    nodes, means = heterogeneous_neighbour_mean(data)
    assert nodes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(means, [[0., 2.], [2., 2.], [0., 2.]])


@pytest.mark.parametrize("sparse", [False, True])
def test_fairsin_low_rank_input_is_exact(sparse):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(30, 12, generator=g) < 0.3).float() * 3
    z, w3, b3, w = (torch.randn(*s, generator=g) for s in ((30, 5), (12, 5), (12,), (7, 12)))
    dense = (x + z @ w3.t() + b3) @ w.t()
    xin = ConstSparse(to_scipy(x.to_sparse_csr())) if sparse else x
    assert torch.allclose(neutralised_projection(xin, z, w3, b3, w), dense, atol=1e-4)


def _toy(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sens = torch.randint(0, 2, (n,), generator=g)
    x = torch.cat([torch.nn.functional.one_hot(y, 2).float() * 2, torch.rand(n, 6, generator=g)], 1)
    src = torch.randint(0, n, (4 * n,), generator=g)
    same = [torch.nonzero(y == c).view(-1) for c in (0, 1)]      # label-homophilous edges, mixed groups
    dst = torch.stack([same[int(y[s])][torch.randint(0, len(same[int(y[s])]), (1,), generator=g)][0] for s in src])
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    data = Data(x=x, y=y, sens=sens, edge_index=ei, num_nodes=n)
    perm = torch.randperm(n, generator=g)
    for name, part in (("train_mask", perm[:60]), ("val_mask", perm[60:90]), ("test_mask", perm[90:])):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[part] = True
        data[name] = mask
    return data


def test_fairsin_trains_to_informative_predictions():
    # the label is in the features (one-hot x 2): a working encoder/classifier must beat chance clearly
    res = train_victim("fairsin", _toy(), seed=0, cfg=VictimConfig(max_epochs=150, min_epochs=0, lr=0.01))
    assert res["acc"] > 0.8 and {"sp", "eo", "eo_tpr", "sp_signed"} <= set(res)


def test_fairsin_needs_inter_group_edges():
    data = _toy()
    data.sens = data.y.clone()          # the edges join nodes of one label, so now never two groups
    with pytest.raises(ForetellError, match="between the two sensitive groups"):
        train_victim("fairsin", data, seed=0, cfg=VictimConfig(max_epochs=2, min_epochs=0))
    data.sens = torch.zeros_like(data.sens)     # one group only: SP / EO are undefined, said first
    with pytest.raises(ForetellError, match="hold no node of sensitive group 1"):
        train_victim("fairsin", data, seed=0, cfg=VictimConfig(max_epochs=2, min_epochs=0))
