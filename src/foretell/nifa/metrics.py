"""Accuracy and group-fairness metrics on test nodes (fractions; the reports show them x100).

* ``sp``: statistical parity as NIFA's code computes it, mean over classes c of
  |P(yhat=c | s=1) - P(yhat=c | s=0)| (for binary labels: the usual |P(yhat=1|s=1) - P(yhat=1|s=0)|);
* ``eo``: equal opportunity *as coded* by NIFA, mean over classes c of
  |P(yhat=c | y=c, s=1) - P(yhat=c | y=c, s=0)| (binary: mean of the TPR gap and the TNR gap);
* ``eo_tpr``: the standard equal-opportunity gap |TPR(s=1) - TPR(s=0)| for the positive class 1;
* ``sp_signed``: P(yhat=1 | s=1) - P(yhat=1 | s=0) with its sign (binary labels: ``sp`` = |sp_signed|),
  to see whether an attack widens the clean gap or pushes through zero to the other side.

Nodes with an unknown sensitive value (-1) are left out of ``sp``/``eo``/``eo_tpr``; a term whose
group is empty counts as 0.
"""

from __future__ import annotations

import numpy as np


def _rate(mask: np.ndarray, event: np.ndarray) -> float | None:
    return float(event[mask].mean()) if mask.any() else None


def _gap(a, b) -> float:
    return 0.0 if a is None or b is None else abs(a - b)


def fairness_metrics(pred, y, sens, num_classes: int | None = None) -> dict:
    """{"acc", "sp", "eo", "eo_tpr", "sp_signed"} for predictions ``pred`` with labels ``y`` and groups ``sens``."""
    pred, y, sens = (np.asarray(v).astype(np.int64) for v in (pred, y, sens))
    if not (pred.shape == y.shape == sens.shape):
        raise ValueError("pred, y and sens must have the same shape")
    c = int(num_classes or max(int(y.max()), int(pred.max())) + 1)
    s1, s0 = sens == 1, sens == 0
    sp = np.mean([_gap(_rate(s1, pred == k), _rate(s0, pred == k)) for k in range(c)])
    eo = np.mean([_gap(_rate(s1 & (y == k), pred == k), _rate(s0 & (y == k), pred == k)) for k in range(c)])
    eo_tpr = _gap(_rate(s1 & (y == 1), pred == 1), _rate(s0 & (y == 1), pred == 1))
    r1, r0 = _rate(s1, pred == 1), _rate(s0, pred == 1)
    sp_signed = 0.0 if r1 is None or r0 is None else r1 - r0
    return {"acc": float((pred == y).mean()) if len(y) else 0.0, "sp": float(sp), "eo": float(eo),
            "eo_tpr": float(eo_tpr), "sp_signed": float(sp_signed)}


def summarise(runs: list[dict]) -> dict:
    """Mean and std (population, over seeds) x100: {"acc","acc_std","sp","sp_std","eo","eo_std",
    "eo_tpr","eo_tpr_std"}."""
    out = {}
    for key in ("acc", "sp", "eo", "eo_tpr"):
        vals = np.array([r[key] for r in runs], dtype=float) * 100
        out[key] = float(vals.mean())
        out[f"{key}_std"] = float(vals.std())
    return out
