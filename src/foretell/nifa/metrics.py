"""Accuracy and group-fairness metrics on test nodes (fractions; the reports show them x100).

* ``sp``: statistical parity as NIFA's code computes it, mean over classes c of
  |P(yhat=c | s=1) - P(yhat=c | s=0)| (for binary labels: the usual |P(yhat=1|s=1) - P(yhat=1|s=0)|);
* ``eo``: equal opportunity *as coded* by NIFA, mean over classes c of
  |P(yhat=c | y=c, s=1) - P(yhat=c | y=c, s=0)| (binary: mean of the TPR gap and the TNR gap);
* ``eo_tpr``: the standard equal-opportunity gap |TPR(s=1) - TPR(s=0)| for the positive class 1;
* ``sp_signed``: P(yhat=1 | s=1) - P(yhat=1 | s=0) with its sign (binary labels: ``sp`` = |sp_signed|),
  to see whether an attack widens the clean gap or pushes through zero to the other side.

Nodes with an unknown sensitive value (-1) are left out of ``sp``/``eo``/``eo_tpr``; a term whose
group is empty counts as 0 (so when only one sensitive group is present the gaps are reported as 0.0,
not as an error: the victims check beforehand that their test nodes hold both groups, see
:func:`foretell.nifa.victims.check_victim_data`).

Bad input is a one-line ``ForetellError``: ``pred``, ``y`` and ``sens`` must be non-empty 1-D
sequences of integers of one length, ``pred`` and ``y`` classes >= 0 (below ``num_classes`` when it
is given), ``sens`` in {0, 1} or -1 (unknown).
"""

from __future__ import annotations

import numpy as np

from foretell.core.errors import ForetellError
from foretell.nifa.validate import is_int


def _rate(mask: np.ndarray, event: np.ndarray) -> float | None:
    return float(event[mask].mean()) if mask.any() else None


def _gap(a, b) -> float:
    return 0.0 if a is None or b is None else abs(a - b)


def _int_vector(name: str, value) -> np.ndarray:
    """``value`` (list, numpy array or CPU / GPU tensor) as a 1-D int64 array, or a ForetellError."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1:
        shape = "" if arr is None else f" of shape {list(arr.shape)}"
        raise ForetellError(f"fairness_metrics: {name} is a {type(value).__name__}{shape}; accepted: a 1-D list, "
                            f"array or tensor of integers (one entry per evaluated node)")
    if arr.size and arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        ok = np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        if not ok:
            raise ForetellError(f"fairness_metrics: {name} holds non-integer values ({arr.dtype}); accepted: "
                                f"integer classes / groups")
    return arr.astype(np.int64)


def fairness_metrics(pred, y, sens, num_classes: int | None = None) -> dict:
    """{"acc", "sp", "eo", "eo_tpr", "sp_signed"} for predictions ``pred`` with labels ``y`` and groups ``sens``
    (see the module docstring for what is accepted)."""
    pred, y, sens = (_int_vector(name, v) for name, v in (("pred", pred), ("y", y), ("sens", sens)))
    if not (pred.shape == y.shape == sens.shape):
        raise ForetellError(f"fairness_metrics: pred, y and sens have lengths {len(pred)}, {len(y)} and {len(sens)}; "
                            f"accepted: one entry per evaluated node in each (equal lengths)")
    if not len(y):
        raise ForetellError("fairness_metrics: pred, y and sens are empty; accepted: at least one evaluated node")
    if y.min() < 0 or pred.min() < 0:
        name = "y" if y.min() < 0 else "pred"
        raise ForetellError(f"fairness_metrics: {name} holds {int(min(y.min(), pred.min()))}; accepted: classes >= 0 "
                            f"(leave nodes with an unknown label out)")
    bad = np.setdiff1d(sens, [-1, 0, 1])
    if len(bad):
        raise ForetellError(f"fairness_metrics: sens holds {bad[:6].tolist()}; accepted: 0 and 1 (the two sensitive "
                            f"groups) and -1 (unknown)")
    top = max(int(y.max()), int(pred.max())) + 1
    if num_classes is not None and (not is_int(num_classes) or num_classes < top):
        raise ForetellError(f"fairness_metrics: num_classes={num_classes!r}; accepted: None or an integer >= {top} "
                            f"(above every class in y and pred)")
    c = int(num_classes) if num_classes is not None else top
    s1, s0 = sens == 1, sens == 0
    sp = np.mean([_gap(_rate(s1, pred == k), _rate(s0, pred == k)) for k in range(c)])
    eo = np.mean([_gap(_rate(s1 & (y == k), pred == k), _rate(s0 & (y == k), pred == k)) for k in range(c)])
    eo_tpr = _gap(_rate(s1 & (y == 1), pred == 1), _rate(s0 & (y == 1), pred == 1))
    r1, r0 = _rate(s1, pred == 1), _rate(s0, pred == 1)
    sp_signed = 0.0 if r1 is None or r0 is None else r1 - r0
    return {"acc": float((pred == y).mean()), "sp": float(sp), "eo": float(eo),
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
