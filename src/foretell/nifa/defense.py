"""The paper's defense: drop the ``eta`` fraction of most-uncertain training nodes before training."""

from __future__ import annotations

import numpy as np
import torch

from foretell.core.errors import ForetellError


def apply_defense(data, eta: float, uncertainty: np.ndarray):
    """A copy of ``data`` whose ``train_mask`` lacks the ``eta`` fraction of most uncertain training
    nodes (``uncertainty`` from :meth:`foretell.nifa.NIFA.uncertainty` on the graph to be trained on)."""
    from foretell.nifa.validate import check_graph, is_real

    if not (is_real(eta) and 0 <= eta < 1):
        raise ForetellError(f"--defense ETA must be a number in [0, 1), got {eta!r}")
    n = check_graph(data, "apply_defense", fields=("x",), masks=("train_mask",))
    if isinstance(uncertainty, torch.Tensor):
        uncertainty = uncertainty.cpu().numpy()
    uncertainty = np.asarray(uncertainty)
    if uncertainty.shape != (n,) or not np.issubdtype(uncertainty.dtype, np.floating):
        raise ForetellError(f"apply_defense: uncertainty has shape {list(uncertainty.shape)} ({uncertainty.dtype}), "
                            f"expected [{n}] floats (NIFA.uncertainty(data, nodes)['uncertainty'], one per node)")
    train = np.flatnonzero(data.train_mask.cpu().numpy())
    unc = uncertainty[train]
    if np.isnan(unc).any():
        raise ForetellError("defense needs the uncertainty of every training node")
    drop = train[np.argsort(-unc, kind="stable")[: int(np.floor(eta * len(train)))]]
    out = data.clone()
    out.train_mask = data.train_mask.clone()
    out.train_mask[torch.as_tensor(drop, dtype=torch.long, device=data.train_mask.device)] = False
    return out
