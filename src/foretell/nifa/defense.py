"""The paper's defense: drop the ``eta`` fraction of most-uncertain training nodes before training."""

from __future__ import annotations

import numpy as np
import torch

from foretell.core.errors import ForetellError


def apply_defense(data, eta: float, uncertainty: np.ndarray):
    """A copy of ``data`` whose ``train_mask`` lacks the ``eta`` fraction of most uncertain training
    nodes (``uncertainty`` from :meth:`foretell.nifa.NIFA.uncertainty` on the graph to be trained on)."""
    if not 0 <= eta < 1:
        raise ForetellError(f"--defense ETA must be in [0, 1), got {eta}")
    train = np.flatnonzero(data.train_mask.cpu().numpy())
    unc = np.asarray(uncertainty)[train]
    if np.isnan(unc).any():
        raise ForetellError("defense needs the uncertainty of every training node")
    drop = train[np.argsort(-unc, kind="stable")[: int(np.floor(eta * len(train)))]]
    out = data.clone()
    out.train_mask = data.train_mask.clone()
    out.train_mask[torch.as_tensor(drop, dtype=torch.long, device=data.train_mask.device)] = False
    return out
