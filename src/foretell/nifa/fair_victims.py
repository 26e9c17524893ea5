"""Fairness-aware victims on PyG: FairGNN (Dai & Wang, WSDM 2021) and FairVGNN (Wang et al., KDD 2022).

Both are compact re-implementations of the published methods (binary labels and sensitive
attribute), trained with the same best-validation-accuracy checkpoint rule as the plain victims.

FairGNN: a GCN sensitive-attribute estimator is pre-trained on ``sens_number`` training nodes with a
known sensitive value and frozen; its sigmoid scores (true values where known) are the adversary's
targets. Encoder (GAT, hidden 128, dropout 0.5; or GCN) + linear classifier minimise
``BCE + alpha * |cov(s_score, y_score)| - beta * L_adv`` while a linear adversary learns to predict
the sensitive score from the embedding (paper settings alpha 4, beta 0.01).

FairVGNN: a learnable per-feature mask (Gumbel-sigmoid relaxation while training, hard at test)
is trained adversarially to hide the sensitive attribute from a discriminator on the GCN embedding;
encoder + classifier minimise ``BCE + alpha * L_fool`` (L_fool pushes the discriminator's output on
the embedding to 0.5); after each encoder step the first-layer weights of each input feature are
clamped to ``clip * (1 - |corr(feature, s)| / max |corr|)`` (adaptive weight clamping).

Both train on the device of ``data``; parameters are initialised on the CPU and moved (as the plain victims).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv, GCNConv

from foretell.core.errors import ForetellError
from foretell.nifa.blocks import constant_features
from foretell.nifa.graph import is_sparse, to_scipy
from foretell.nifa.victims import (VictimConfig, bind_constant_graph, check_victim_call, evaluate_predictions,
                                   mask_index, sparse_adjacency)


@dataclass
class FairConfig:
    """Settings of the fairness-aware victims (FairGNN: alpha 4, beta 0.01, sens_number 200)."""

    fairgnn_encoder: str = "gcn"      # NIFA used "gat"; GCN is ~3x cheaper on CPU
    fairgnn_alpha: float = 4.0
    fairgnn_beta: float = 0.01
    sens_number: int = 200
    dropout: float = 0.5
    estimator_epochs: int = 50
    estimator_lr: float = 1e-2
    fairvgnn_alpha: float = 0.5
    fairvgnn_clip: float = 1.0
    fairvgnn_tau: float = 0.5

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """One-line ``ForetellError`` on a bad setting (the encoder gcn or gat, integers >= 1, finite
        numbers in range)."""
        from foretell.nifa.validate import int_problem, number_problem

        problems = [("sens_number", int_problem(self.sens_number, 1)),
                    ("estimator_epochs", int_problem(self.estimator_epochs, 1)),
                    ("fairgnn_alpha", number_problem(self.fairgnn_alpha, 0.0)),
                    ("fairgnn_beta", number_problem(self.fairgnn_beta, 0.0)),
                    ("dropout", number_problem(self.dropout, 0.0, 1.0, high_open=True)),
                    ("estimator_lr", number_problem(self.estimator_lr, 0.0, low_open=True)),
                    ("fairvgnn_alpha", number_problem(self.fairvgnn_alpha, 0.0)),
                    ("fairvgnn_clip", number_problem(self.fairvgnn_clip, 0.0, low_open=True)),
                    ("fairvgnn_tau", number_problem(self.fairvgnn_tau, 0.0, low_open=True))]
        bad = [f"{name}={problem}" for name, problem in problems if problem]
        if self.fairgnn_encoder not in ("gcn", "gat"):
            bad.insert(0, f"fairgnn_encoder={self.fairgnn_encoder!r} is not an encoder (accepted: gcn, gat)")
        if bad:
            raise ForetellError(f"invalid fair-victim settings: {'; '.join(bad)}")


class _Encoder(torch.nn.Module):
    def __init__(self, kind, in_dim, hidden, dropout):
        super().__init__()
        self.kind, self.dropout = kind, dropout
        self.conv = GATConv(in_dim, hidden, heads=1) if kind == "gat" else GCNConv(in_dim, hidden, cached=True)

    def forward(self, x, graph):
        h = self.conv(x, graph)
        return F.dropout(F.elu(h) if self.kind == "gat" else torch.relu(h), self.dropout, self.training)


def _binary(data):
    if int(data.y.max()) > 1:
        raise ForetellError("FairGNN/FairVGNN need binary labels; this data set has "
                            f"{int(data.y.max()) + 1} classes")


def _sens_train(data, number: int, seed: int) -> torch.Tensor:
    known = torch.nonzero(data.train_mask & (data.sens >= 0)).view(-1)
    if len(known) == 0:
        raise ForetellError("FairGNN/FairVGNN need training nodes with a known sensitive value; there are none")
    g = torch.Generator().manual_seed(seed)
    return known[torch.randperm(len(known), generator=g)[:number].to(known.device)]


def _fit(model_step, eval_logits, data, cfg: VictimConfig):
    """Shared loop: ``model_step(epoch)`` trains one epoch; ``eval_logits()`` -> (N,) logits."""
    val, y = mask_index(data.val_mask), data.y.float()
    best, best_state, best_epoch, epoch = (-1.0, float("inf")), None, 0, 0
    for epoch in range(cfg.max_epochs):
        model_step(epoch)
        with torch.no_grad():       # one read-back per epoch (early stopping)
            out = eval_logits(train=False)
            acc, loss = torch.stack([((out[val] > 0).float() == y[val]).float().mean(),
                                     F.binary_cross_entropy_with_logits(out[val], y[val])]).tolist()
        if (acc, -loss) > (best[0], -best[1]):
            best, best_epoch, best_state = (acc, loss), epoch, copy.deepcopy(eval_logits.state())
        elif epoch >= cfg.min_epochs and epoch - best_epoch > cfg.patience:
            break
    eval_logits.load(best_state)
    with torch.no_grad():
        pred = (eval_logits(train=False) > 0).long()
    return {**evaluate_predictions(pred, data), "epochs": epoch + 1, "best_epoch": best_epoch}


class _Evaluator:
    def __init__(self, modules, fn):
        self.modules, self.fn = modules, fn

    def __call__(self, train=False):
        for m in self.modules:
            m.train(train)
        return self.fn()

    def state(self):
        return [m.state_dict() for m in self.modules]

    def load(self, states):
        for m, s in zip(self.modules, states):
            m.load_state_dict(s)


def train_fairgnn(data, seed: int, cfg: VictimConfig, fc: FairConfig) -> dict:
    """Train FairGNN on ``data``; test metrics of the best-validation checkpoint."""
    _binary(data)
    torch.manual_seed(seed)
    adj = sparse_adjacency(data)
    graph = data.edge_index if fc.fairgnn_encoder == "gat" else adj
    x, h, dev = data.x, cfg.hidden, data.x.device
    idx_s = _sens_train(data, fc.sens_number, seed)
    s_true = data.sens[idx_s].float()
    est = torch.nn.ModuleDict({"conv": GCNConv(x.shape[1], h, cached=True), "out": torch.nn.Linear(h, 1)}).to(dev)
    bind_constant_graph(est, data)
    opt_e = torch.optim.Adam(est.parameters(), lr=fc.estimator_lr, weight_decay=1e-5)
    for _ in range(fc.estimator_epochs):
        opt_e.zero_grad()
        s_logit = est["out"](torch.relu(est["conv"](x, adj))).view(-1)
        F.binary_cross_entropy_with_logits(s_logit[idx_s], s_true).backward()
        opt_e.step()
    with torch.no_grad():
        s_score = torch.sigmoid(est["out"](torch.relu(est["conv"](x, adj))).view(-1))
        s_score[idx_s] = s_true
    enc = bind_constant_graph(_Encoder(fc.fairgnn_encoder, x.shape[1], h, fc.dropout).to(dev), data)
    cls, adv = torch.nn.Linear(h, 1).to(dev), torch.nn.Linear(h, 1).to(dev)
    opt_g = torch.optim.Adam(list(enc.parameters()) + list(cls.parameters()), lr=cfg.lr, weight_decay=1e-5)
    opt_a = torch.optim.Adam(adv.parameters(), lr=cfg.lr, weight_decay=1e-5)
    train, y = mask_index(data.train_mask), data.y.float()

    def step(_epoch):
        enc.train(), cls.train()
        opt_g.zero_grad()
        emb = enc(x, graph)
        logit = cls(emb).view(-1)
        y_score = torch.sigmoid(logit)
        cov = torch.abs(torch.mean((s_score - s_score.mean()) * (y_score - y_score.mean())))
        adv_loss = F.binary_cross_entropy_with_logits(adv(emb).view(-1), s_score)
        loss = F.binary_cross_entropy_with_logits(logit[train], y[train]) + fc.fairgnn_alpha * cov \
            - fc.fairgnn_beta * adv_loss
        loss.backward()
        opt_g.step()
        opt_a.zero_grad()
        F.binary_cross_entropy_with_logits(adv(emb.detach()).view(-1), s_score).backward()
        opt_a.step()

    ev = _Evaluator([enc, cls], lambda: cls(enc(x, graph)).view(-1))
    return _fit(step, ev, data, cfg)


def _feature_sens_corr(x, sens) -> torch.Tensor:
    """|Pearson correlation| of each feature with the sensitive attribute (known nodes), on ``x``'s device."""
    known = (sens >= 0).cpu().numpy()
    s = sens.cpu().numpy()[known].astype(np.float64)
    m = to_scipy(x)[known] if is_sparse(x) else x.cpu().numpy()[known]
    mean = np.asarray(m.mean(0)).ravel()
    sq = np.asarray(m.multiply(m).mean(0)).ravel() if hasattr(m, "multiply") else (m ** 2).mean(0)
    cross = np.asarray(m.T @ s).ravel() / len(s)
    cov = cross - mean * s.mean()
    std = np.sqrt(np.maximum(sq - mean ** 2, 0)) * s.std()
    corr = np.divide(np.abs(cov), std, out=np.zeros_like(cov), where=std > 0)
    return torch.from_numpy(corr.astype(np.float32)).to(x.device)


def train_fairvgnn(data, seed: int, cfg: VictimConfig, fc: FairConfig) -> dict:
    """Train FairVGNN on ``data``; test metrics of the best-validation checkpoint."""
    _binary(data)
    torch.manual_seed(seed)
    adj = sparse_adjacency(data)
    x, h, f, dev = data.x, cfg.hidden, data.x.shape[1], data.x.device
    idx_s = _sens_train(data, 10 ** 9, seed)
    s_true = data.sens[idx_s].float()
    corr = _feature_sens_corr(x, data.sens)
    bound = (fc.fairvgnn_clip * (1 - corr / corr.max().clamp_min(1e-12))).unsqueeze(0)  # (1, F)
    mask_logit = torch.nn.Parameter(torch.full((f,), 3.0, device=dev))
    w1 = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(h, f)).to(dev))
    conv = GCNConv(h, h, cached=True, bias=True).to(dev)   # propagates the masked projection
    cls, disc = torch.nn.Linear(h, 1).to(dev), torch.nn.Linear(h, 1).to(dev)
    opt_m = torch.optim.Adam([mask_logit], lr=cfg.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    opt_c = torch.optim.Adam([w1, *conv.parameters(), *cls.parameters()], lr=cfg.lr)
    train, y = mask_index(data.train_mask), data.y.float()
    torch.nn.init.eye_(conv.lin.weight)
    conv.lin.weight.requires_grad_(False)

    xs = constant_features(x)

    def embed(mask):
        # (x * mask) @ w1^T == x @ (w1 * mask)^T keeps sparse x sparse (scipy product, cached transpose)
        wm = w1 * mask.unsqueeze(0)
        return torch.relu(conv(F.linear(x, wm) if xs is None else xs @ wm.t(), adj))

    def soft_mask():
        u = torch.rand_like(mask_logit).clamp(1e-6, 1 - 1e-6)
        return torch.sigmoid((mask_logit + torch.log(u) - torch.log1p(-u)) / fc.fairvgnn_tau)

    enc_params = [w1, *[p for p in conv.parameters() if p.requires_grad], *cls.parameters()]

    def step(_epoch):
        emb = embed(soft_mask())                      # one forward serves all three updates
        # discriminator on the (detached) embedding
        opt_d.zero_grad()
        F.binary_cross_entropy_with_logits(disc(emb.detach()[idx_s]).view(-1), s_true).backward()
        opt_d.step()
        d_out = disc(emb[idx_s]).view(-1)
        # mask generator: make the discriminator fail while keeping most features
        gen_loss = -F.binary_cross_entropy_with_logits(d_out, s_true) + 0.1 * (1 - torch.sigmoid(mask_logit)).mean()
        fool = F.binary_cross_entropy_with_logits(d_out, torch.full_like(s_true, 0.5))
        enc_loss = F.binary_cross_entropy_with_logits(cls(emb).view(-1)[train], y[train]) + fc.fairvgnn_alpha * fool
        opt_m.zero_grad()
        opt_c.zero_grad()
        (mask_logit.grad,) = torch.autograd.grad(gen_loss, [mask_logit], retain_graph=True)
        for p, g in zip(enc_params, torch.autograd.grad(enc_loss, enc_params)):
            p.grad = g
        opt_m.step()
        opt_c.step()
        with torch.no_grad():  # adaptive weight clamping
            w1.copy_(torch.max(torch.min(w1, bound), -bound))

    holder = torch.nn.ModuleDict({"conv": conv, "cls": cls})
    params = torch.nn.ParameterDict({"w1": w1, "mask": mask_logit})
    ev = _Evaluator([holder, params], lambda: cls(embed((mask_logit > 0).float())).view(-1))
    return _fit(step, ev, data, cfg)


def train_fair(name: str, data, seed: int, cfg: VictimConfig | None = None, fc: FairConfig | None = None) -> dict:
    """Train ``fairgnn`` or ``fairvgnn`` (arguments and data checked first, as by ``train_victim``)."""
    from foretell.nifa.validate import check_config

    if name not in ("fairgnn", "fairvgnn"):
        raise ForetellError(f"unknown fairness-aware victim {name!r}; accepted: fairgnn, fairvgnn")
    fc = check_config(f"victim {name}", fc, FairConfig)
    seed, cfg = check_victim_call(name, data, seed, cfg)
    if name == "fairgnn":
        return train_fairgnn(data, seed, cfg, fc)
    if name == "fairvgnn":
        return train_fairvgnn(data, seed, cfg, fc)
    raise ForetellError(f"unknown fairness-aware victim {name!r}; accepted: fairgnn, fairvgnn")
