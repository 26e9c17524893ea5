"""The Bayesian GCN's T masked networks on a row block, forward and backward by hand, masks over threads.

``masked_logits(block, w1, w2, m1, m2, threads)`` returns the logits (rows, T, C) of the T networks
``P2 relu(P1 X (W1*M1_t)) (W2*M2_t)`` and is differentiable in ``w1`` and ``w2``. It computes the same
numbers as :meth:`foretell.nifa.uncertainty.BayesianGCN.forward` with autograd (the reference; the
tests compare loss and gradients), but

* the masks are split into ``threads`` contiguous groups, each run by one worker thread from forward to
  backward (scipy's sparse products and torch's ops release the GIL), so two cores work on different
  masks instead of both cores splitting every one of the 4 x T small sparse products per epoch;
* the caller runs it with one torch intra-op thread, so torch's OpenMP workers do not spin on the cores
  the mask workers need;
* the backward is written out (relu mask, the three sparse transposes precomputed in the block), with
  no autograd graph per mask; each worker sums its masks' weight gradients and the sums are added at
  the end (float rounding differs from autograd's accumulation order, nothing else).
"""

from __future__ import annotations

import numpy as np
import torch

from foretell.nifa.blocks import GCNBlock, thread_pool


def _sp(const, w: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``const @ w`` (or ``const.T @ w``) for a :class:`~foretell.nifa.blocks.ConstSparse`, one thread."""
    m = const.at.m if transpose else const.a.m
    return torch.from_numpy(np.asarray(m @ w.numpy()))


def _layer1(block: GCNBlock, w: torch.Tensor) -> torch.Tensor:
    l1 = block.layer1
    return l1.ax @ w if l1.mode == "dense" else _sp(l1.p1, _sp(l1.x, w))


def _layer1_t(block: GCNBlock, g: torch.Tensor) -> torch.Tensor:
    l1 = block.layer1
    return l1.ax.T @ g if l1.mode == "dense" else _sp(l1.x, _sp(l1.p1, g, True), True)


class _MaskedLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w1, w2, block, m1, m2, threads):
        w1, w2 = w1.detach(), w2.detach()
        t_all = m1.shape[0]
        parts = [p for p in np.array_split(np.arange(t_all), max(1, min(threads, t_all))) if len(p)]
        out = torch.empty(block.p2.shape[0], t_all, w2.shape[1])
        saved = [None] * t_all

        def run(ts):
            for t in ts:
                h = torch.relu(_layer1(block, w1 * m1[t]))          # (r1, H)
                g = _sp(block.p2, h)                                # (out rows, H): layer 2 is linear
                out[:, t] = g @ (w2 * m2[t])
                saved[t] = (h, g)

        list(thread_pool(len(parts)).map(run, parts)) if len(parts) > 1 else run(parts[0])
        ctx.state = (block, m1, m2, w1, w2, parts, saved)
        return out

    @staticmethod
    def backward(ctx, grad):
        block, m1, m2, w1, w2, parts, saved = ctx.state
        grad = grad.contiguous()

        def run(ts):
            g1, g2 = torch.zeros_like(w1), torch.zeros_like(w2)
            for t in ts:
                h, g = saved[t]
                go = grad[:, t].contiguous()                        # (out rows, C)
                g2.addcmul_(g.T @ go, m2[t])
                gh = _sp(block.p2, go @ (w2 * m2[t]).T, True)       # (r1, H)
                gh = torch.ops.aten.threshold_backward(gh, h, 0.0)  # relu backward (as autograd does it)
                g1.addcmul_(_layer1_t(block, gh), m1[t])
            return g1, g2

        results = list(thread_pool(len(parts)).map(run, parts)) if len(parts) > 1 else [run(parts[0])]
        ctx.state = None
        g1 = sum(r[0] for r in results)
        g2 = sum(r[1] for r in results)
        return g1, g2, None, None, None, None


def masked_logits(block: GCNBlock, w1: torch.Tensor, w2: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
                  threads: int = 1) -> torch.Tensor:
    """Logits (rows, T, C) of the T masked 2-layer GCNs at the block's output rows (differentiable in
    ``w1``, ``w2``); the masks are split over ``threads`` worker threads. Call it with one torch thread
    (see :func:`foretell.nifa.uncertainty.node_uncertainty`)."""
    return _MaskedLogits.apply(w1, w2, block, m1.to(w1.dtype), m2.to(w2.dtype), int(threads))
