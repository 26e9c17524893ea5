"""NIFA step 4 (feature optimisation): alternate a GCN surrogate and the injected nodes' features.

Each round trains the surrogate (2-layer GCN, cross-entropy on training nodes) for ``max_step``
steps, then takes ``max_step`` Adam steps on the injected features to minimise

    L_CE - beta * (L_SP + L_EO) - alpha * L_CF

where L_SP / L_EO are squared gaps between the sensitive groups' mean surrogate logits (overall /
per true class) on the training nodes and L_CF is the squared gap between the two injected groups'
mean features. After each step the features are clamped per column to the real features' range;
at the end they are rounded where the real features are integers.

Exact shortcut for the feature step: the injected features only reach their 2-hop region, so the
logits of training nodes outside it are constants while the surrogate is frozen. Per round we cache
those logits and the real-feature part of layer 1, and each step recomputes only the 1-hop rows of
layer 1 and the affected training rows of layer 2 (``FeatureObjective.full_loss`` is the reference).

Everything runs on the device of the poisoned graph's features; the surrogate's weights and the
injected nodes' start are drawn on the CPU with the attack's generator and moved, so a GPU run starts
from the same numbers as a CPU run. The steps read no values back except the per-round history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from foretell.core.progress import progress
from foretell.nifa.blocks import ConstSparse, GCNBlock
from foretell.nifa.graph import feature_mm, gcn_norm, neighbourhood, rows, to_torch


@dataclass
class FeatureConfig:
    """Feature-attack settings (paper DBLP: alpha 0.1, beta 8, 10 rounds of 50 steps, lr 1e-3)."""

    alpha: float = 0.1
    beta: float = 8.0
    max_iter: int = 10
    max_step: int = 50
    lr: float = 1e-3
    hidden: int = 128
    eo_terms: str = "true_class"  # "true_class" (NIFA code) or "all_logits"
    # non-paper, opt-in: push every gap in the direction of the training-label gap (signed squares)
    # instead of letting the squared gap grow in whichever direction the start happens to favour
    directional_gaps: bool = False


def feature_box(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column (min, max) of the real features (sparse: implicit zeros count)."""
    if x.layout == torch.sparse_csr:
        from foretell.nifa.graph import to_scipy

        m = to_scipy(x)
        lo = torch.from_numpy(np.asarray(m.min(0).todense()).ravel().astype(np.float32))
        hi = torch.from_numpy(np.asarray(m.max(0).todense()).ravel().astype(np.float32))
        return lo.to(x.device), hi.to(x.device)
    return x.min(0).values, x.max(0).values


def init_features(num: int, dim: int, gen: torch.Generator, device=None) -> torch.Tensor:
    """The injected features' N(0.5, 0.5^2) start, drawn with the CPU generator ``gen`` and moved to
    ``device``. Not clamped: as in the paper and the official code the box applies after each feature
    step, so the first round's surrogate trains on the raw draw."""
    return (0.5 + 0.5 * torch.randn(num, dim, generator=gen)).to(device)


def finalize_features(x: torch.Tensor, lo, hi, integer: bool) -> torch.Tensor:
    """Clamp to the box and round when the real features are integers."""
    x = torch.max(torch.min(x.detach(), hi), lo)
    return torch.round(x) if integer else x


class Surrogate(torch.nn.Module):
    """2-layer GCN (hidden 128, bias, no dropout) used to score the injected features."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, gen: torch.Generator):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(in_dim, hidden), generator=gen))
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(hidden, num_classes), generator=gen))
        self.b2 = torch.nn.Parameter(torch.zeros(num_classes))


def _sq(diff: torch.Tensor, direction: torch.Tensor | None) -> torch.Tensor:
    """diff^2, or with ``direction`` (+1/-1 per entry) the signed square direction * diff * |diff|."""
    return diff.square() if direction is None else direction * diff * diff.abs()


def label_gap_direction(y: torch.Tensor, sens: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class c, the sign of P(y=c | s=1) - P(y=c | s=0) on the given (training) nodes (+1 if 0)."""
    onehot = F.one_hot(y, num_classes).float()
    gap = onehot[sens == 1].mean(0) - onehot[sens == 0].mean(0)
    return torch.where(gap < 0, -1.0, 1.0)


def gap_index(y: torch.Tensor, sens: torch.Tensor, num_classes: int):
    """The rows :func:`fairness_gaps` averages over, as index tensors (computed once for fixed ``y``
    and ``sens``, so that a step on a GPU reads nothing back): (s=1 rows, s=0 rows, per class c the
    pair (s=1 & y=c rows, s=0 & y=c rows), or ``None`` when one of them is empty)."""
    s1, s0 = sens == 1, sens == 0
    per = []
    for c in range(num_classes):
        a, b = s1 & (y == c), s0 & (y == c)
        per.append((a.nonzero().view(-1), b.nonzero().view(-1)) if a.any() and b.any() else None)
    return s1.nonzero().view(-1), s0.nonzero().view(-1), per


def fairness_gaps(logits, y, sens, num_classes, eo_terms: str = "true_class", direction=None, index=None):
    """(L_SP, L_EO): squared gaps of group-mean logits between the sensitive groups.

    L_SP: MSE between the two groups' mean logit vectors. L_EO, ``"true_class"`` (the NIFA code):
    for each class c, the gap of the two groups' mean *class-c* logit over their nodes of true class
    c, squared and averaged over classes; ``"all_logits"``: per class c the MSE of the whole mean
    logit vectors over the nodes of class c, averaged over classes.

    ``direction`` (non-paper, ``FeatureConfig.directional_gaps``; per-class signs, e.g.
    :func:`label_gap_direction`): every squared gap of a class-c entry becomes the signed square
    ``direction[c] * gap * |gap|``, so maximising it widens the gap on the side of the labels' gap only.
    ``index``: :func:`gap_index` of ``y``, ``sens`` if precomputed."""
    i1, i0, per = gap_index(y, sens, num_classes) if index is None else index
    l_sp = _sq(logits[i1].mean(0) - logits[i0].mean(0), direction).mean()
    terms = []
    for c, pair in enumerate(per):
        if pair is None:
            terms.append(logits.new_zeros(()))     # the NIFA code's zero entry for an empty class
            continue
        a, b = pair
        if eo_terms == "true_class":
            terms.append(_sq(logits[a, c].mean() - logits[b, c].mean(), None if direction is None else direction[c]))
        else:
            terms.append(_sq(logits[a].mean(0) - logits[b].mean(0), direction).mean())
    l_eo = torch.stack(terms).mean() if terms else logits.new_zeros(())
    return l_sp, l_eo


class FeatureObjective:
    """The surrogate, the poisoned graph and the feature loss, with the 2-hop cache for feature steps."""

    def __init__(self, data, num_real: int, groups: np.ndarray, train: np.ndarray, cfg: FeatureConfig,
                 gen: torch.Generator, block_mode: str = "auto"):
        self.cfg, self.num_real, self.train = cfg, num_real, train
        self.device = dev = data.x.device
        self.groups = torch.as_tensor(groups, device=dev)
        self.g1, self.g0 = (torch.as_tensor(np.flatnonzero(np.asarray(groups) == g), device=dev) for g in (1, 0))
        self.prop = gcn_norm(data.edge_index, data.num_nodes)
        self._prop_c = self._prop_train_c = None
        self.x_real = rows(data.x, np.arange(num_real)) if data.x.shape[0] != num_real else data.x
        self.y = data.y[torch.as_tensor(train, device=data.y.device)].to(dev)
        self.sens = data.sens[torch.as_tensor(train, device=data.sens.device)].to(dev)
        self.num_classes = int(data.y.max()) + 1
        self.gaps = gap_index(self.y, self.sens, self.num_classes)
        self.direction = label_gap_direction(self.y, self.sens, self.num_classes) if cfg.directional_gaps else None
        self.model = Surrogate(data.x.shape[1], cfg.hidden, self.num_classes, gen).to(dev)
        inj = np.arange(num_real, data.num_nodes)
        # surrogate block: train rows <- r1 <- r2; A_hat X of the real rows is constant for the attack
        self.block = GCNBlock(self.prop, self.x_real, train, mode=block_mode, num_const=num_real)
        self.r2_inj = torch.as_tensor(self.block.var_nodes - num_real, device=dev)
        # feature block: injected -> R1 (1 hop) -> affected train rows T2
        self.R1 = neighbourhood(self.prop, inj)
        in_r1 = np.zeros(data.num_nodes, dtype=bool)
        in_r1[self.R1] = True
        reach = neighbourhood(self.prop, self.R1)
        t_mask = np.isin(train, reach)
        self.t2_pos = torch.as_tensor(np.flatnonzero(t_mask), device=dev)
        t2 = train[t_mask]
        pr1 = self.prop[self.R1]
        self.a_real = self._const(pr1[:, :num_real])
        self.a_inj = torch.from_numpy(pr1[:, num_real:].toarray()).to(dev)
        pt2 = self.prop[t2]
        self.p_t2_r1 = self._const(pt2[:, self.R1])
        keep = np.flatnonzero(~in_r1)
        self.p_t2_rest, self.rest = self._const(pt2[:, keep]), torch.as_tensor(keep, device=dev)

    def _const(self, m):
        """A constant sparse matrix for :func:`_mm`: torch CSR on the CPU, :class:`ConstSparse`
        (precomputed transpose for the backward) on a GPU."""
        return to_torch(m) if self.device.type == "cpu" else ConstSparse(m, self.device)

    def _props(self):
        """The whole graph's A_hat and its training rows as :meth:`_const` (built once)."""
        if self._prop_c is None:
            self._prop_c, self._prop_train_c = self._const(self.prop), self._const(self.prop[self.train])
        return self._prop_c, self._prop_train_c

    # ---- surrogate -------------------------------------------------------------------------
    def surrogate_logits(self, x_inj: torch.Tensor) -> torch.Tensor:
        """Surrogate logits of the training nodes (exact; only their 2-hop rows are computed)."""
        m, blk = self.model, self.block
        pre = blk.layer1 @ m.w1
        if blk.p1_var is not None:
            pre = pre + blk.p1_var @ (x_inj[self.r2_inj] @ m.w1)
        return blk.p2 @ (torch.relu(pre + m.b1) @ m.w2) + m.b2

    def train_surrogate(self, x_inj: torch.Tensor, steps: int, opt) -> float:
        x_inj = x_inj.detach()
        loss = torch.zeros(())
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(self.surrogate_logits(x_inj), self.y)
            loss.backward()
            opt.step()
        return float(loss.detach())

    # ---- feature loss ----------------------------------------------------------------------
    def loss_terms(self, logits, x_inj, cf_features=None):
        """(feature loss, its terms {"ce", "sp", "eo", "cf"} as detached tensors); L_CF is computed on
        ``cf_features`` (default ``x_inj``)."""
        ce = F.cross_entropy(logits, self.y)
        l_sp, l_eo = fairness_gaps(logits, self.y, self.sens, self.num_classes, self.cfg.eo_terms, self.direction,
                                   self.gaps)
        cf = x_inj if cf_features is None else cf_features
        l_cf = F.mse_loss(cf[self.g1].mean(0), cf[self.g0].mean(0))
        total = ce - self.cfg.beta * (l_sp + l_eo) - self.cfg.alpha * l_cf
        return total, {k: v.detach() for k, v in (("ce", ce), ("sp", l_sp), ("eo", l_eo), ("cf", l_cf))}

    def loss_from_logits(self, logits, x_inj, cf_features=None):
        """Feature loss and its terms as floats; L_CF is computed on ``cf_features`` (default ``x_inj``)."""
        total, parts = self.loss_terms(logits, x_inj, cf_features)
        return total, {k: float(v) for k, v in parts.items()}

    def full_logits(self, x_inj: torch.Tensor) -> torch.Tensor:
        """Reference: surrogate logits of the training nodes from the whole graph."""
        m = self.model
        prop, prop_train = self._props()
        xw = torch.cat([feature_mm(self.x_real, m.w1), x_inj @ m.w1], 0)
        h = torch.relu(_mm(prop, xw) + m.b1)
        return _mm(prop_train, h @ m.w2) + m.b2

    def full_loss(self, x_inj):
        return self.loss_from_logits(self.full_logits(x_inj), x_inj)

    def freeze(self, x_inj: torch.Tensor) -> None:
        """Cache the parts of the logits the injected features cannot change (surrogate fixed)."""
        m = self.model
        prop, prop_train = self._props()
        with torch.no_grad():
            xw_real = feature_mm(self.x_real, m.w1)
            xw = torch.cat([xw_real, x_inj @ m.w1], 0)
            h = torch.relu(_mm(prop, xw) + m.b1)
            z = h @ m.w2
            self.base_logits = _mm(prop_train, z) + m.b2
            self.c1 = _mm(self.a_real, xw_real) + m.b1
            self.const_t2 = _mm(self.p_t2_rest, z[self.rest]) + m.b2
            self.w1, self.w2 = m.w1.detach(), m.w2.detach()

    def fast_logits(self, x_inj: torch.Tensor) -> torch.Tensor:
        h_r1 = torch.relu(self.c1 + self.a_inj @ (x_inj @ self.w1))
        out_t2 = self.const_t2 + _mm(self.p_t2_r1, h_r1 @ self.w2)
        logits = self.base_logits.clone()
        logits[self.t2_pos] = out_t2
        return logits

    def train_gap(self, x_inj: torch.Tensor) -> dict:
        """The surrogate's prediction gap on the training nodes: P(yhat=1|s=1) - P(yhat=1|s=0) (signed;
        binary labels) -- the quantity the feature step should move, logged per round."""
        with torch.no_grad():
            pred = self.fast_logits(x_inj).argmax(-1)
        s1, s0 = self.sens == 1, self.sens == 0
        return {"train_sp_signed": float((pred[s1] == 1).float().mean() - (pred[s0] == 1).float().mean())}

    def fast_loss(self, x_inj, cf_features=None):
        return self.loss_from_logits(self.fast_logits(x_inj), x_inj, cf_features)

    def fast_terms(self, x_inj):
        """:meth:`fast_loss` with the terms left as tensors (nothing read back)."""
        return self.loss_terms(self.fast_logits(x_inj), x_inj)


def _mm(a, w: torch.Tensor) -> torch.Tensor:
    """``a @ w`` for a :meth:`FeatureObjective._const` matrix."""
    return torch.sparse.mm(a, w) if isinstance(a, torch.Tensor) else a @ w


def optimise_features(data, num_real: int, groups: np.ndarray, train: np.ndarray, cfg: FeatureConfig,
                      lo: torch.Tensor, hi: torch.Tensor, integer: bool, gen: torch.Generator):
    """Run the alternating optimisation on ``data``'s device; returns (final features, per-round loss
    history). ``gen`` is a CPU generator (see the module docstring)."""
    obj = FeatureObjective(data, num_real, groups, train, cfg, gen)
    x_inj = init_features(len(groups), lo.numel(), gen, lo.device).requires_grad_(True)
    opt_s = torch.optim.Adam(obj.model.parameters(), lr=cfg.lr)
    opt_x = torch.optim.Adam([x_inj], lr=cfg.lr)
    history = []
    for _ in progress(range(cfg.max_iter), desc="feature attack"):
        ce_s = obj.train_surrogate(x_inj, cfg.max_step, opt_s)
        obj.freeze(x_inj.detach())
        parts = {}
        for _ in range(cfg.max_step):
            opt_x.zero_grad()
            loss, parts = obj.fast_terms(x_inj)
            loss.backward()
            opt_x.step()
            with torch.no_grad():
                x_inj.copy_(torch.max(torch.min(x_inj, hi), lo))
        parts = {k: float(v) for k, v in parts.items()}
        history.append({"surrogate_ce": ce_s, **parts, **obj.train_gap(x_inj.detach())})
    return finalize_features(x_inj, lo, hi, integer), history
