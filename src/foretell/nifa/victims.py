"""Victim GNNs on PyG and their training loop (Adam lr 1e-3, best-validation checkpoint).

Plain victims (paper settings: hidden 128, no dropout):

* ``gcn``: 2 x ``GCNConv``;
* ``sage``: 2 GraphSAGE layers with mean aggregation (layer 1 applies its linear maps *before*
  aggregating, which is the same function and keeps sparse features sparse; layer 2 is ``SAGEConv``);
* ``appnp``: Linear-ReLU-Linear then ``APPNP(K=1, alpha=0.2)`` as in the NIFA code;
* ``sgc``: SGC with K=1, i.e. ``GCNConv(in, classes)`` (= A_hat X W + b, the same map as ``SGConv``).

The fairness-aware ``fairgnn`` and ``fairvgnn`` live in :mod:`foretell.nifa.fair_victims`, ``fairsin`` in
:mod:`foretell.nifa.fairsin`.
Training keeps the parameters with the best validation accuracy (ties: lower validation loss) and
stops early after ``patience`` epochs without improvement, but never before ``min_epochs``.

Every victim trains on the device of ``data`` (PyG style: ``train_victim(name, data.to("cuda"), seed)``);
the parameters are initialised on the CPU from the seed and then moved, so both devices start alike.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch_geometric.nn import APPNP, GCNConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import spmm, to_torch_csr_tensor

from foretell.core.errors import ForetellError
from foretell.nifa.blocks import ConstSparse, constant_features
from foretell.nifa.metrics import fairness_metrics

PLAIN_VICTIMS = ("gcn", "sage", "appnp", "sgc")
FAIR_VICTIMS = ("fairgnn", "fairvgnn", "fairsin")
VICTIMS = PLAIN_VICTIMS + FAIR_VICTIMS


@dataclass
class VictimConfig:
    """Victim training settings (NIFA code: hidden 128, Adam lr 1e-3, patience 50 after epoch 200)."""

    hidden: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 1000
    min_epochs: int = 200
    patience: int = 50

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """One-line ``ForetellError`` on a bad setting: hidden, max_epochs and patience integers >= 1,
        min_epochs an integer >= 0 (above max_epochs it just means no early stop), lr a finite number
        > 0, weight_decay a finite number >= 0."""
        from foretell.nifa.validate import int_problem, number_problem

        problems = [(name, int_problem(getattr(self, name), low)) for name, low in
                    (("hidden", 1), ("max_epochs", 1), ("min_epochs", 0), ("patience", 1))]
        problems += [("lr", number_problem(self.lr, 0.0, low_open=True)),
                     ("weight_decay", number_problem(self.weight_decay, 0.0))]
        bad = [f"{name}={problem}" for name, problem in problems if problem]
        if bad:
            raise ForetellError(f"invalid victim settings: {'; '.join(bad)}")


def check_victim_data(name: str, data) -> int:
    """What victim ``name`` needs of ``data`` (:func:`foretell.nifa.validate.check_graph`): x, y, sens,
    edge_index and the three masks over labelled nodes, both sensitive groups among the labelled test
    nodes (SP / EO compare them); fairgnn / fairvgnn / fairsin: binary labels, and fairgnn / fairvgnn
    both groups among the labelled training nodes too. Returns num_nodes."""
    from foretell.nifa.validate import check_graph

    groups = {"test_mask": "SP and EO compare the two groups' predictions on the test nodes"}
    if name in ("fairgnn", "fairvgnn"):
        groups["train_mask"] = "its sensitive-attribute adversary learns from the training nodes"
    return check_graph(data, f"victim {name}", masks=("train_mask", "val_mask", "test_mask"),
                       binary=name in FAIR_VICTIMS, groups_in=groups)


def check_victim_call(name: str, data, seed, cfg):
    """(seed, cfg) of a victim call, checked together with ``data`` (before any work)."""
    from foretell.nifa.validate import check_config, check_seed

    seed = check_seed(f"victim {name}", seed)
    cfg = check_config(f"victim {name}", cfg, VictimConfig)
    check_victim_data(name, data)
    return seed, cfg


class GCN(torch.nn.Module):
    """Two GCNConv layers with ReLU."""

    def __init__(self, in_dim, hidden, out_dim):
        super().__init__()
        self.conv1, self.conv2 = GCNConv(in_dim, hidden, cached=True), GCNConv(hidden, out_dim, cached=True)

    def forward(self, x, edge_index):
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)


class LinearFirstSAGEConv(torch.nn.Module):
    """GraphSAGE-mean layer lin_l(mean_j x_j) + lin_r(x_i), computed as mean_j (W_l x_j) + b + W_r x_i.

    ``mean_adj`` (optional, set by :func:`bind_constant_graph`): the row-normalised adjacency as a
    constant sparse matrix, used instead of PyG's ``spmm(reduce="mean")`` (same numbers)."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin_l = Linear(in_dim, out_dim, bias=True, weight_initializer="glorot")
        self.lin_r = Linear(in_dim, out_dim, bias=False, weight_initializer="glorot")
        self.mean_adj = None

    def forward(self, x, adj_t):
        h = self.lin_l(x) - self.lin_l.bias
        agg = spmm(adj_t, h, reduce="mean") if self.mean_adj is None else self.mean_adj @ h
        return agg + self.lin_l.bias + self.lin_r(x)


class SAGE(torch.nn.Module):
    """Two GraphSAGE (mean) layers with ReLU."""

    def __init__(self, in_dim, hidden, out_dim):
        super().__init__()
        self.conv1, self.conv2 = LinearFirstSAGEConv(in_dim, hidden), SAGEConv(hidden, out_dim, aggr="mean")

    def forward(self, x, edge_index):
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)


class APPNPNet(torch.nn.Module):
    """Linear-ReLU-Linear, then APPNP propagation (K=1, alpha=0.2)."""

    def __init__(self, in_dim, hidden, out_dim, k: int = 1, alpha: float = 0.2):
        super().__init__()
        self.lin1, self.lin2 = Linear(in_dim, hidden, weight_initializer="glorot"), Linear(hidden, out_dim)
        self.prop = APPNP(K=k, alpha=alpha, cached=True)

    def forward(self, x, edge_index):
        return self.prop(self.lin2(torch.relu(self.lin1(x))), edge_index)


class SGC(torch.nn.Module):
    """SGC with K=1: A_hat X W + b."""

    def __init__(self, in_dim, hidden, out_dim):
        super().__init__()
        self.conv = GCNConv(in_dim, out_dim, cached=True)

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


MODELS = {"gcn": GCN, "sage": SAGE, "appnp": APPNPNet, "sgc": SGC}


class ConstFeatureLinear(torch.nn.Module):
    """A first-layer PyG ``Linear`` whose input is the graph's constant sparse feature matrix ``x``:
    ``x @ W^T (+ b)`` runs as a scipy product with a precomputed transpose (``ConstSparse``; torch's
    CSR product re-sorts the transpose on every backward). Other inputs go to the wrapped layer."""

    def __init__(self, lin: torch.nn.Module, x: torch.Tensor, xs: ConstSparse):
        super().__init__()
        self.lin, self.x, self.xs = lin, x, xs

    @property
    def weight(self) -> torch.Tensor:
        return self.lin.weight

    @property
    def bias(self):
        return self.lin.bias

    def forward(self, x):
        if x is not self.x:
            return self.lin(x)
        out = self.xs @ self.lin.weight.t()
        return out if self.lin.bias is None else out + self.lin.bias


def bind_constant_graph(model: torch.nn.Module, data) -> torch.nn.Module:
    """Speed up a plain victim for training on the fixed graph ``data`` without changing its function:
    first-layer linear maps of sparse features use :class:`ConstFeatureLinear`, and GraphSAGE's
    first mean aggregation a constant row-normalised adjacency. Returns ``model`` (modified)."""
    x = data.x
    xs = constant_features(x)                   # on x's device
    if xs is not None:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (Linear, torch.nn.Linear)) and child.weight.shape[1] == x.shape[1]:
                    setattr(parent, name, ConstFeatureLinear(child, x, xs))
    for m in model.modules():
        if isinstance(m, LinearFirstSAGEConv):
            ei, n = data.edge_index.cpu().numpy(), data.num_nodes   # the same entries as sparse_adjacency
            a = sp.csr_matrix((np.ones(ei.shape[1], np.float32), (ei[0], ei[1])), shape=(n, n))
            deg = np.asarray(a.sum(1)).ravel()
            m.mean_adj = ConstSparse(sp.diags(np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)) @ a, x.device)
    return model


def check_victims(names) -> list[str]:
    names = [n.strip().lower() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    bad = [n for n in names if n not in VICTIMS]
    if bad or not names:
        raise ForetellError(f"unknown victim(s) {bad or names}; accepted: {', '.join(VICTIMS)}")
    if len(set(names)) != len(names):
        raise ForetellError(f"victims {names} name one twice; list each victim once")
    return names


def _masks(data):
    for key in ("train_mask", "val_mask", "test_mask"):
        if key not in data:
            raise ForetellError(f"data has no {key}; call foretell.nifa.add_split(data, seed) first")
    return data.train_mask, data.val_mask, data.test_mask


def mask_index(mask: torch.Tensor) -> torch.Tensor:
    """The node ids of a boolean mask: indexing with them reads the same rows as the mask, without the
    device-to-host read a boolean index costs on a GPU in every epoch."""
    return mask.nonzero().view(-1)


def sparse_adjacency(data) -> torch.Tensor:
    """The graph as a torch sparse CSR adjacency (PyG convs then use sparse products, which are
    several times faster on CPU than edge-wise message passing)."""
    n, ei = data.num_nodes, data.edge_index
    return to_torch_csr_tensor(ei, torch.ones(ei.shape[1], device=ei.device), size=(n, n))


def evaluate_predictions(pred: torch.Tensor, data) -> dict:
    """Test-node metrics of predictions over all nodes (computed on the host, once per run)."""
    test = data.test_mask
    return fairness_metrics(pred[test].cpu().numpy(), data.y[test].cpu().numpy(), data.sens[test].cpu().numpy(),
                            num_classes=int(data.y.max()) + 1)


def train_plain(name: str, data, seed: int, cfg: VictimConfig | None = None) -> dict:
    """Train victim ``name`` on ``data`` and return test metrics plus the epochs run."""
    if not isinstance(name, str) or name not in MODELS:
        raise ForetellError(f"unknown plain victim {name!r}; accepted: {', '.join(MODELS)}")
    seed, cfg = check_victim_call(name, data, seed, cfg)
    train, val = (mask_index(m) for m in _masks(data)[:2])
    torch.manual_seed(seed)
    num_classes = int(data.y.max()) + 1
    model = bind_constant_graph(MODELS[name](data.x.shape[1], cfg.hidden, num_classes).to(data.x.device), data)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    y = data.y
    adj = sparse_adjacency(data)
    best = (-1.0, float("inf"))
    best_state, best_epoch = None, 0
    for epoch in range(cfg.max_epochs):
        model.train()
        opt.zero_grad()
        out = model(data.x, adj)          # no dropout: these are also the eval logits
        with torch.no_grad():       # one read-back per epoch: the early-stopping decision needs it
            val_acc, val_loss = torch.stack([(out[val].argmax(-1) == y[val]).float().mean(),
                                             F.cross_entropy(out[val], y[val])]).tolist()
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (val_acc, val_loss), epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch >= cfg.min_epochs and epoch - best_epoch > cfg.patience:
            break
        F.cross_entropy(out[train], y[train]).backward()
        opt.step()
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        pred = model(data.x, adj).argmax(-1)
    return {**evaluate_predictions(pred, data), "epochs": epoch + 1, "best_epoch": best_epoch}


def train_victim(name: str, data, seed: int, cfg: VictimConfig | None = None) -> dict:
    """Train any victim (plain or fairness-aware) on PyG ``data``; returns test metrics (fractions).

    ``name``: one of :data:`VICTIMS`; ``seed``: an integer in 0 .. 2**32 - 1; ``cfg``: a
    :class:`VictimConfig` or None. Bad arguments or data are a one-line ``ForetellError`` before any work."""
    if not isinstance(name, str) or name not in VICTIMS:
        raise ForetellError(f"unknown victim {name!r}; accepted: {', '.join(VICTIMS)}")
    if name == "fairsin":
        from foretell.nifa.fairsin import train_fairsin

        return train_fairsin(data, seed, cfg)
    if name in FAIR_VICTIMS:
        from foretell.nifa.fair_victims import train_fair

        return train_fair(name, data, seed, cfg)
    return train_plain(name, data, seed, cfg)
