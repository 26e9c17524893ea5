"""Token importance: ``score = his * fut * exp(cf)`` and its ablations.

his: attention each image token received (summed over heads, queries, layers and the batch) at the
    previous main step. fut: the same quantity at the nearest speculative timestep. cf: how many
    consecutive main steps the token has been cached (fights starvation). his and fut are normalised
    per step (mean 1, or rank-based) so their product is O(1); ``cf_scale`` sets the weight of the
    starvation term, exp(cf_scale * cf).
"""

from __future__ import annotations

import torch

from foretell.specdiff.config import SpecDiffConfig
from foretell.specdiff.levels import C1


def _normalise(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """"mean": divide by the mean (mean 1). "rank": rank among the tokens (1 = lowest, stable ties)
    scaled by 2 / N, so values lie in (0, 2] with mean ~1."""
    x = x.double().clamp_min(0.0)
    if mode == "rank":
        order = torch.sort(x, stable=True).indices
        ranks = torch.empty_like(x)
        ranks[order] = torch.arange(1, x.numel() + 1, dtype=x.dtype, device=x.device)
        return ranks * (2.0 / x.numel())
    return x / x.mean().clamp_min(1e-300)


class TokenImportance:
    """Per-run importance state of the N image tokens."""

    def __init__(self, config: SpecDiffConfig, num_tokens: int, device: torch.device) -> None:
        self.config = config
        self.num_tokens = num_tokens
        self.device = device
        self.reset_state()

    def reset_state(self) -> None:
        """Forget history, speculative scores and cached counts."""
        self.history: torch.Tensor | None = None
        self.future: list[tuple[float, torch.Tensor]] = []
        self.cached_count = torch.zeros(self.num_tokens, dtype=torch.long, device=self.device)

    def set_history(self, received: torch.Tensor) -> None:
        """Record the attention received at the main step just computed."""
        self.history = _normalise(received, self.config.score_norm)

    def add_future(self, sigma: float, received: torch.Tensor) -> None:
        """Record the attention received at a speculative timestep ``sigma``."""
        self.future.append((float(sigma), _normalise(received, self.config.score_norm)))

    def future_at(self, sigma: float) -> torch.Tensor | None:
        """Speculative scores at the speculative timestep nearest to ``sigma`` (None if none)."""
        if not self.future:
            return None
        return min(self.future, key=lambda item: abs(item[0] - sigma))[1]

    def score(self, sigma: float) -> torch.Tensor:
        """The score of every token at main timestep ``sigma`` under the configured mode."""
        s = torch.ones(self.num_tokens, dtype=torch.float64, device=self.device)
        if self.config.uses_history and self.history is not None:
            s = s * self.history
        if self.config.uses_future:
            fut = self.future_at(sigma)
            if fut is not None:
                s = s * fut
        cf = self.cached_count.clamp_max(self.config.max_cached_count).double()
        return s * torch.exp(self.config.cf_scale * cf)

    def update_counts(self, levels: torch.Tensor) -> None:
        """cf = 0 for computed tokens, +1 for every cached one."""
        self.cached_count = torch.where(levels == C1, torch.zeros_like(self.cached_count), self.cached_count + 1)

    def mark_all_computed(self) -> None:
        """A full step computed every token."""
        self.cached_count.zero_()
