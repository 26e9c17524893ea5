"""NIFA step 2 (uncertainty maximisation): the most uncertain labelled nodes of each sensitive group."""

from __future__ import annotations

import numpy as np

from foretell.core.errors import ForetellError
from foretell.nifa.uncertainty import top_k_by_group


def select_targets(uncertainty: np.ndarray, y: np.ndarray, sens: np.ndarray, k: float) -> dict:
    """{0: nodes, 1: nodes}: in each sensitive group, the ceil(k * n) most uncertain labelled nodes.

    Candidates are the nodes with a known label and a known sensitive value (the official code's
    "labelled" nodes). Ties are broken by node id (stable sort).
    """
    if not 0 < k <= 1:
        raise ForetellError(f"k (target fraction) must be in (0, 1], got {k}")
    cand = np.flatnonzero((y >= 0) & (sens >= 0))
    if np.isnan(uncertainty[cand]).any():
        raise ForetellError("uncertainty is missing for some labelled nodes; compute it on every candidate")
    out = top_k_by_group(uncertainty, cand, sens, k)
    for g in (0, 1):
        if len(out[g]) == 0:
            raise ForetellError(f"sensitive group {g} has no labelled nodes; NIFA needs both groups")
    return out
