"""FairSIN victim (Yang et al., AAAI 2024, "sensitive information neutralization"), GCN variant.

A compact re-implementation of the in-training FairSIN of the authors' code on PyG (binary labels and
sensitive attribute), used by the NIFA paper with a GCN encoder and delta = 4:

1. Heterogeneous neighbours: for every node with a known sensitive value, the mean feature vector of its
   neighbours whose (known) sensitive value differs; nodes without such a neighbour have none.
2. An MLP (3 linear layers, ReLU; hidden = the victim's hidden size) learns to predict that mean from
   the node's own features: MSE, Adam (lr 0.1, weight decay 1e-3 as in the authors' defaults), 90/10
   split of the nodes that have a target, the best validation state of ``mlp_steps`` steps is kept.
3. The victim is the authors' GCN encoder (one linear map without bias, GCN propagation, bias; no
   activation) and a linear classifier, trained on ``x + delta * MLP(x)`` with the MLP frozen and the
   same rule as every other victim here (Adam lr 1e-3, best validation accuracy, patience 50 after
   epoch 200). The authors alternate 20 MLP steps with 10 encoder steps for 20 rounds and pick the
   round with the best validation accuracy + AUC + F1 - (SP + EO); we train the MLP first (its loss
   does not involve the encoder without the optional discriminator, which is off by default there too)
   and keep our common checkpoint rule so that all victims are compared alike.

Exact shortcut: ``MLP(x) = Z W3^T + b3`` with ``Z`` the MLP's last hidden layer (N x hidden), so the
encoder's first map of ``x + delta MLP(x)`` is ``x W^T + delta (Z (W3^T W^T) + b3 W^T)``: the dense
(N x F) neutralised feature matrix is never formed (``test_fairsin_low_rank_input_is_exact``).

Trains on the device of ``data``; the neighbour means are computed on the host (scipy) once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from foretell.core.errors import ForetellError
from foretell.nifa.blocks import ConstSparse, as_scipy_features
from foretell.nifa.fair_victims import _Evaluator, _fit
from foretell.nifa.graph import adjacency, device_of
from foretell.nifa.victims import VictimConfig, check_victim_call, mask_index, sparse_adjacency


@dataclass
class FairSINConfig:
    """FairSIN settings (NIFA paper: GCN encoder, delta 4; MLP lr 0.1, weight decay 1e-3, 20 x 20 steps)."""

    delta: float = 4.0
    mlp_lr: float = 0.1
    mlp_weight_decay: float = 1e-3
    mlp_steps: int = 400

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """One-line ``ForetellError`` on a bad setting."""
        from foretell.nifa.validate import int_problem, number_problem

        problems = [("delta", number_problem(self.delta, 0.0)),
                    ("mlp_lr", number_problem(self.mlp_lr, 0.0, low_open=True)),
                    ("mlp_weight_decay", number_problem(self.mlp_weight_decay, 0.0)),
                    ("mlp_steps", int_problem(self.mlp_steps, 1))]
        bad = [f"{name}={problem}" for name, problem in problems if problem]
        if bad:
            raise ForetellError(f"invalid FairSIN settings: {'; '.join(bad)}")


def heterogeneous_neighbour_mean(data) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, means): nodes with at least one neighbour of the other (known) sensitive group, and the
    mean feature vector of those neighbours (dense float32, one row per node)."""
    a = adjacency(data.edge_index, data.num_nodes).tocoo()
    s = data.sens.cpu().numpy()
    keep = (s[a.row] >= 0) & (s[a.col] >= 0) & (s[a.row] != s[a.col])
    h = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (a.row[keep], a.col[keep])),
                      shape=a.shape)
    deg = np.asarray(h.sum(1)).ravel()
    nodes = np.flatnonzero(deg > 0)
    means = (h[nodes] @ as_scipy_features(data.x)).toarray() / deg[nodes, None]
    return nodes, means.astype(np.float32)


class NeighbourMLP(torch.nn.Module):
    """x -> estimated mean features of the heterogeneous neighbours (3 linear layers, ReLU)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(in_dim, hidden), torch.nn.Linear(hidden, hidden)
        self.fc3 = torch.nn.Linear(hidden, in_dim)

    def hidden(self, x) -> torch.Tensor:
        """Last hidden layer Z (the output is ``fc3(Z)``); ``x``: dense tensor or :class:`ConstSparse`."""
        first = x @ self.fc1.weight.t() + self.fc1.bias
        return torch.relu(self.fc2(torch.relu(first)))

    def forward(self, x) -> torch.Tensor:
        return self.fc3(self.hidden(x))


def neutralised_projection(x, z: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(x + z w3^T + b3) w^T`` without forming the dense (N x F) neutralised features: ``x`` dense or
    :class:`ConstSparse` (N x F), ``z`` (N x h), ``w3`` (F x h), ``b3`` (F,), ``w`` (out x F)."""
    return x @ w.t() + z @ (w3.t() @ w.t()) + b3 @ w.t()


def _features(x, rows=None):
    m = as_scipy_features(x)
    m = m if rows is None else m[rows]
    dev = device_of(x)
    return ConstSparse(m, dev) if m.nnz < 0.5 * m.shape[0] * m.shape[1] else torch.from_numpy(m.toarray()).to(dev)


def fit_neighbour_mlp(data, hidden: int, fc: FairSINConfig, seed: int) -> NeighbourMLP:
    """Train the heterogeneous-neighbour estimator (best validation MSE over ``mlp_steps`` steps)."""
    nodes, target = heterogeneous_neighbour_mean(data)
    if len(nodes) < 2:
        raise ForetellError("FairSIN needs edges between the two sensitive groups; this graph has none")
    gen = torch.Generator().manual_seed(seed)
    perm = nodes[torch.randperm(len(nodes), generator=gen).numpy()]
    pos = {int(n): i for i, n in enumerate(nodes)}
    n_val = max(1, len(perm) // 10)
    dev = data.x.device
    splits = {k: (idx, torch.from_numpy(target[[pos[int(n)] for n in idx]]).to(dev))
              for k, idx in (("val", perm[:n_val]), ("train", perm[n_val:]))}
    xs = {k: _features(data.x, idx) for k, (idx, _) in splits.items()}
    mlp = NeighbourMLP(data.x.shape[1], hidden).to(dev)
    opt = torch.optim.Adam(mlp.parameters(), lr=fc.mlp_lr, weight_decay=fc.mlp_weight_decay)
    best, best_state = float("inf"), None
    for _ in range(fc.mlp_steps):
        opt.zero_grad()
        F.mse_loss(mlp(xs["train"]), splits["train"][1]).backward()
        opt.step()
        with torch.no_grad():
            val = float(F.mse_loss(mlp(xs["val"]), splits["val"][1]))    # one read-back per step
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in mlp.state_dict().items()}
    mlp.load_state_dict(best_state)
    return mlp.eval()


def train_fairsin(data, seed: int, cfg: VictimConfig | None = None, fc: FairSINConfig | None = None) -> dict:
    """Train the FairSIN GCN on ``data``; test metrics of the best-validation checkpoint (arguments and
    data checked first, as by ``train_victim``)."""
    from foretell.nifa.validate import check_config

    fc = check_config("victim fairsin", fc, FairSINConfig)
    seed, cfg = check_victim_call("fairsin", data, seed, cfg)
    torch.manual_seed(seed)
    mlp = fit_neighbour_mlp(data, cfg.hidden, fc, seed)
    x = _features(data.x)
    with torch.no_grad():
        z = mlp.hidden(x)                                        # (N, hidden), constant from here on
        w3, b3 = fc.delta * mlp.fc3.weight, fc.delta * mlp.fc3.bias  # delta * MLP(x) = z w3^T + b3
    dev = data.x.device
    lin = torch.nn.Linear(data.x.shape[1], cfg.hidden, bias=False).to(dev)
    conv = GCNConv(cfg.hidden, cfg.hidden, cached=True, bias=True).to(dev)   # propagation + bias only
    torch.nn.init.eye_(conv.lin.weight)
    conv.lin.weight.requires_grad_(False)
    cls = torch.nn.Linear(cfg.hidden, 1).to(dev)
    adj = sparse_adjacency(data)

    def logits():
        return cls(conv(neutralised_projection(x, z, w3, b3, lin.weight), adj)).view(-1)

    params = [lin.weight, conv.bias, *cls.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train, y = mask_index(data.train_mask), data.y.float()

    def step(_epoch):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(logits()[train], y[train]).backward()
        opt.step()

    holder = torch.nn.ModuleDict({"lin": lin, "conv": conv, "cls": cls})
    return _fit(step, _Evaluator([holder], logits), data, cfg)
