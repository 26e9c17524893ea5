"""Node uncertainty from a Bayesian GCN with T fixed DropConnect masks (NIFA step 1).

Two GCN layers without bias, Xavier-initialised weights W1 (F x H) and W2 (H x C) with the official
code's gain ``calculate_gain('relu')`` = sqrt(2) (until this session: gain 1; ``init_gain=1.0``). T Bernoulli(p)
masks per weight matrix are drawn once and kept fixed; every epoch evaluates the T masked networks.
Loss = mean over masks of the cross-entropy on the
training labels + (1-p)/T * (mean W1^2 + mean W2^2), Adam. Uncertainty of a node = variance over
the T softmax outputs, averaged over classes.

Exact shortcuts: the loss only reads the outputs of the training nodes, so each epoch evaluates
layer 2 on those rows and layer 1 on their 1-hop region only (same numbers as the full graph; the
constant ``A_hat X`` part is cached dense or as sparse factors, see :mod:`foretell.nifa.blocks`).
Layer 2 is linear, so the propagation runs before the per-mask weights (P2 H1_t W2_t =
(P2 H1_t) W2_t), and the masks are evaluated one after the other. Training epochs use
:func:`foretell.nifa.masked_gcn.masked_logits` (same numbers, backward by hand, masks split over the
torch threads with torch itself held to one intra-op thread meanwhile). On a GPU (the device of
``data``) the epochs run the autograd forward on the device and the masks and weights are drawn on the
CPU with the same generator as there, then moved, so both devices start from the same network.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from foretell.core.errors import ForetellError
from foretell.core.progress import progress
from foretell.nifa.blocks import GCNBlock
from foretell.nifa.graph import gcn_norm
from foretell.nifa.masked_gcn import masked_logits

RELU_GAIN = math.sqrt(2.0)      # torch.nn.init.calculate_gain("relu"), as in the official code


@dataclass
class UncertaintyConfig:
    """Bayesian-GCN settings (paper: hidden 128, T=20, p=0.5, 500 epochs, lr 1e-3)."""

    hidden: int = 128
    num_masks: int = 20
    keep_prob: float = 0.5
    epochs: int = 500
    lr: float = 1e-3
    check_every: int = 0          # >0: early stop when the target sets are stable (see patience)
    stable_checks: int = 2        # consecutive checks with identical top-k sets before stopping
    min_epochs: int = 0
    k: float = 0.5                # target fraction used by the stability check
    init_gain: float = RELU_GAIN  # Xavier gain of W1, W2 (official code: calculate_gain("relu"))


class BayesianGCN(torch.nn.Module):
    """Two-layer bias-free GCN evaluated under T fixed DropConnect masks at once."""

    def __init__(self, in_dim: int, num_classes: int, cfg: UncertaintyConfig, generator: torch.Generator):
        super().__init__()
        self.cfg = cfg
        self.w1 = torch.nn.Parameter(torch.empty(in_dim, cfg.hidden))
        self.w2 = torch.nn.Parameter(torch.empty(cfg.hidden, num_classes))
        torch.nn.init.xavier_uniform_(self.w1, gain=cfg.init_gain, generator=generator)
        torch.nn.init.xavier_uniform_(self.w2, gain=cfg.init_gain, generator=generator)
        p = cfg.keep_prob
        self.register_buffer("m1", torch.bernoulli(torch.full((cfg.num_masks, in_dim, cfg.hidden), p), generator=generator))
        self.register_buffer("m2", torch.bernoulli(torch.full((cfg.num_masks, cfg.hidden, num_classes), p), generator=generator))

    def forward(self, block: GCNBlock) -> torch.Tensor:
        """Logits (nodes, T, C) of the block's output nodes under every mask.

        One mask at a time: the (rows x H) intermediates stay small (the earlier (rows x T*H)
        product spent most of its time allocating and filling 170 MB buffers on DBLP)."""
        outs = []
        for t in range(self.m1.shape[0]):
            h1 = torch.relu(block.layer1 @ (self.w1 * self.m1[t]))      # (r1, H)
            outs.append((block.p2 @ h1) @ (self.w2 * self.m2[t]))      # propagate first: layer 2 is linear
        return torch.stack(outs, 1)

    def train_logits(self, block: GCNBlock, threads: int = 1) -> torch.Tensor:
        """Same as ``self(block)``, with the masks split over ``threads`` worker threads
        (:func:`~foretell.nifa.masked_gcn.masked_logits`); call it under :func:`one_torch_thread`.
        Off the CPU it is ``self(block)`` (the worker threads only help scipy's products)."""
        if self.w1.device.type != "cpu":
            return self(block)
        return masked_logits(block, self.w1, self.w2, self.m1, self.m2, threads)

    def regulariser(self) -> torch.Tensor:
        return (1 - self.cfg.keep_prob) / self.cfg.num_masks * (self.w1.pow(2).mean() + self.w2.pow(2).mean())


@contextmanager
def one_torch_thread():
    """Hold torch to one intra-op thread (restored afterwards); yields the previous thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _variance(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, -1).var(dim=1, unbiased=False).mean(-1)


def top_k_by_group(unc: np.ndarray, nodes: np.ndarray, sens: np.ndarray, k: float) -> dict:
    """{group: nodes of that group among ``nodes`` with the top ``k`` fraction of uncertainty}."""
    out = {}
    for g in (0, 1):
        cand = nodes[sens[nodes] == g]
        n = int(np.ceil(k * len(cand)))
        order = np.argsort(-unc[cand], kind="stable")
        out[g] = np.sort(cand[order[:n]])
    return out


def node_uncertainty(data, train_nodes: np.ndarray, eval_nodes: np.ndarray, cfg: UncertaintyConfig,
                     seed: int, *, history_at: tuple = ()) -> dict:
    """Train the Bayesian GCN on ``train_nodes`` and return uncertainties of every node in ``eval_nodes``.

    Returns ``{"uncertainty": (N,) float array (NaN outside eval_nodes), "epochs": int,
    "history": {epoch: uncertainty array}}`` (history for the epochs listed in ``history_at``).
    """
    if len(train_nodes) == 0:
        raise ForetellError("the Bayesian GCN needs labelled training nodes; the split has none")
    gen = torch.Generator().manual_seed(int(seed))
    prop = gcn_norm(data.edge_index, data.num_nodes)
    y, device = data.y, data.x.device
    num_classes = int(y.max()) + 1
    model = BayesianGCN(data.x.shape[1], num_classes, cfg, gen).to(device)
    train_block = GCNBlock(prop, data.x, train_nodes)
    eval_block = GCNBlock(prop, data.x, eval_nodes)
    target = y[torch.as_tensor(train_nodes, device=y.device)].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sens = data.sens.cpu().numpy()
    unc = np.full(data.num_nodes, np.nan)
    history, prev, stable, epoch = {}, None, 0, 0

    def evaluate():
        with torch.no_grad():
            out = np.full(data.num_nodes, np.nan)
            out[eval_nodes] = _variance(model(eval_block)).double().cpu().numpy()
            return out

    bar = progress(range(cfg.epochs), desc="bayesian gcn")
    with one_torch_thread() as threads:          # the mask workers use the cores instead
        for epoch in bar:
            opt.zero_grad()
            logits = model.train_logits(train_block, threads)
            t = logits.shape[1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.repeat_interleave(t)) + model.regulariser()
            loss.backward()
            opt.step()
            done = epoch + 1
            if done in history_at:
                history[done] = evaluate()
            if cfg.check_every and done % cfg.check_every == 0 and done >= cfg.min_epochs:
                cur = top_k_by_group(evaluate(), eval_nodes, sens, cfg.k)
                same = prev is not None and all(np.array_equal(cur[g], prev[g]) for g in (0, 1))
                stable = stable + 1 if same else 0
                prev = cur
                if stable >= cfg.stable_checks:
                    break
    bar.close()
    unc[:] = evaluate()
    return {"uncertainty": unc, "epochs": epoch + 1, "history": history}
