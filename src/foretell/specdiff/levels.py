"""The three token levels of SpecDiff and the C3 blend weights.

C1 (computed): the top ``n_compute`` tokens by score go through the transformer blocks.
C2 (reused): the lowest-score tokens making up the bottom ``reuse_mass`` of the total score mass
    reuse their last computed feature.
C3 (blended): every other cached token takes a weighted mix of its last features, with weights
    proportional to ``exp(-i) * (T_{t+i} - T_t)`` (i = 1 for the most recent feature), normalised.
"""

from __future__ import annotations

import math

import torch

C1, C2, C3 = 0, 1, 2
LEVEL_NAMES = ("C1", "C2", "C3")


def num_computed(num_tokens: int, cache_rate: float) -> int:
    """How many image tokens a cached step computes: round((1 - cache_rate) * N), at least 1."""
    return max(1, min(num_tokens, int(round(num_tokens * (1.0 - cache_rate)))))


def assign_levels(
    scores: torch.Tensor, n_compute: int, reuse_mass: float, *, reuse: bool = True, blend: bool = True
) -> torch.Tensor:
    """Level of each token (C1/C2/C3 as 0/1/2) from non-negative ``scores`` of shape (N,).

    Ties are broken by token index (stable sort), so the assignment is deterministic.
    With ``reuse`` off, C2 tokens are blended; with ``blend`` off (or both off) cached tokens reuse.
    """
    return select_levels(scores, n_compute, reuse_mass, reuse=reuse, blend=blend)[0]


def select_levels(
    scores: torch.Tensor, n_compute: int, reuse_mass: float, *, reuse: bool = True, blend: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign_levels` and the C1 token indices in ascending order, without a host sync (no
    boolean indexing: the number of C1 tokens is known, the C2 set is written with a scatter)."""
    n = scores.numel()
    order_desc = torch.argsort(scores, descending=True, stable=True)
    computed = order_desc[:n_compute]
    if reuse_mass > 0:
        order_asc = torch.argsort(scores, stable=True)
        mass = torch.cumsum(scores[order_asc].double(), 0)
        total = mass[-1].clamp_min(1e-300)
        low = torch.where(mass <= reuse_mass * total, C2, C3)
        levels = torch.empty(n, dtype=torch.long, device=scores.device).scatter_(0, order_asc, low)
    else:
        levels = torch.full((n,), C3, dtype=torch.long, device=scores.device)
    if not blend:
        levels[:] = C2
    elif not reuse:
        levels[:] = C3
    levels[computed] = C1
    return levels, torch.sort(computed).values


_DECAY: dict = {}


def _decay(h: int, device: torch.device) -> torch.Tensor:
    """exp(-(i + 1)) for i < h as float64 on ``device``, built once per (h, device) (a host-to-GPU copy
    at every cached step would make the step wait for the GPU)."""
    key = (h, str(device))
    if key not in _DECAY:
        _DECAY[key] = torch.tensor([math.exp(-(i + 1)) for i in range(h)], dtype=torch.float64).to(device)
    return _DECAY[key]


def blend_weights(hist_sigmas: torch.Tensor, sigma_now: float) -> torch.Tensor:
    """C3 blend weights, shape (H, N), from the timesteps at which each token's last H features were made.

    ``hist_sigmas[i, j]`` is the timestep (any monotone unit: sigma or sigma*1000) of token j's
    (i+1)-th most recent feature, NaN where the token has fewer features. Weight of feature i is
    ``exp(-(i+1)) * (hist_sigmas[i] - sigma_now)``, normalised over the available features; a token
    whose weights are all zero falls back to its most recent feature.
    """
    decay = _decay(hist_sigmas.shape[0], hist_sigmas.device)
    gap = (hist_sigmas.double() - float(sigma_now)).clamp_min(0.0)
    w = torch.nan_to_num(decay[:, None] * gap, nan=0.0)
    total = w.sum(0, keepdim=True)
    fallback = torch.zeros_like(w)
    fallback[0] = 1.0
    w = torch.where(total > 0, w / total.clamp_min(1e-300), fallback)
    return w.to(torch.float32)
