"""The visual tokens as a [views, patches] grid: per-view top-k selections in one tensor operation.

SpecPrune selects tokens per camera view (top-k by attention, changed patches, the global set).
Doing that with a Python loop over views costs a dozen small tensor operations per view and stage;
on a small backbone that per-operation cost is a visible share of the pruned query. ``ViewGrid``
holds the original token index of every patch as a [V, P] tensor, maps the scores of the current
rows onto it (-inf where a patch was already dropped) and takes all views' top-k at once with a
single ``topk`` and a rank mask (the per-view k may differ). Selections are bool [V, P] masks.
"""

from __future__ import annotations

import torch

from foretell.core.errors import ForetellError
from foretell.specprune.engine import rows_where
from foretell.specprune.model import TokenLayout


class ViewGrid:
    """Original token indices of the visual tokens, one row per view (patches row-major)."""

    def __init__(self, layout: TokenLayout, device):
        sizes = {s.stop - s.start for s in layout.views.values()}
        if len(sizes) != 1:
            raise ForetellError(f"all camera views must have the same number of patches (the adapter's patches_per_view), got {sorted(sizes)}")
        self.length = layout.length
        self.index = torch.stack([torch.arange(s.start, s.stop) for s in layout.views.values()]).to(device)  # [V, P]
        self.views, self.patches = self.index.shape
        self.non_visual = torch.ones(layout.length, dtype=torch.bool, device=device)
        self.non_visual[self.index.flatten()] = False
        self._rank_masks: dict = {}

    def empty(self) -> torch.Tensor:
        """An all-False selection [V, P]."""
        return torch.zeros(self.views, self.patches, dtype=torch.bool, device=self.index.device)

    def scores(self, origin: torch.Tensor, row_scores: torch.Tensor) -> torch.Tensor:
        """Scores of the current rows (``origin``: their original indices) as [V, P]; -inf for patches
        that are no longer among the rows."""
        if origin.numel() == self.length:  # nothing dropped yet: row i is original token i
            return row_scores[self.index]
        table = row_scores.new_full((self.length,), float("-inf"))
        table[origin] = row_scores
        return table[self.index]

    def _rank_mask(self, counts: tuple, kmax: int) -> torch.Tensor:
        key = (counts, kmax)
        mask = self._rank_masks.get(key)
        if mask is None:
            ranks = torch.arange(kmax, device=self.index.device)
            mask = ranks.unsqueeze(0) < torch.tensor(counts, device=self.index.device).unsqueeze(1)
            self._rank_masks[key] = mask
        return mask

    def top(self, grid_scores: torch.Tensor, *counts: tuple) -> list:
        """For each ``counts`` tuple (one k per view): bool [V, P] of every view's k best patches.

        One ``topk`` serves all count tuples; ties are broken as ``torch.topk`` does. Patches scored
        -inf (already dropped) are selected only if a view has fewer than k patches left; callers
        that may ask for more than are left intersect with the present patches.
        """
        kmax = min(self.patches, max(max(c) for c in counts))
        if kmax <= 0:
            return [self.empty() for _ in counts]
        idx = torch.topk(grid_scores, kmax, dim=1).indices
        return [self.empty().scatter_(1, idx, self._rank_mask(tuple(min(int(k), kmax) for k in c), kmax)) for c in counts]

    def cap(self, selection: torch.Tensor, grid_scores: torch.Tensor, budget: int) -> torch.Tensor:
        """At most ``budget`` selected patches over all views: the best scored ones."""
        flat = torch.where(selection, grid_scores, torch.full_like(grid_scores, float("-inf"))).flatten()
        idx = torch.topk(flat, budget).indices
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(0, idx, True).view_as(selection)

    def keep_rows(self, origin: torch.Tensor, selection: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """Current rows to keep (ascending): every non-visual row and the selected patches' rows.
        ``count``: the number of selected patches if the caller read it already (then no device read here;
        every selected patch must still be among the rows)."""
        table = self.non_visual.clone()
        table[self.index] = selection
        if origin.numel() != self.length:
            table = table[origin]
        return rows_where(table, None if count is None else self.length - self.views * self.patches + count)

    def origins(self, selection: torch.Tensor, view: int) -> torch.Tensor:
        """Original token indices of the selected patches of one view (ascending)."""
        return self.index[view][selection[view]]
