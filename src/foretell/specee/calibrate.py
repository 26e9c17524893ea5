"""Calibrated per-layer exit thresholds (the paper's fixed 0.5 exits far too often on small models).

On calibration tokens that are NOT evaluation data (the held-out 20% of the training prompts), for
each layer: the exits that would fire at threshold t are the tokens whose predictor score is > t and
whose layer argmax is among the draft's candidates (the rest of the exit rule); an exit is right
when that argmax is the final layer's token. :func:`precision_threshold` picks the LOWEST t whose
exit precision reaches a target (at least ``min_fires`` exits, else the layer is disabled with
t = 1.0, which never fires). :func:`end_to_end_agreement` then measures what a target gives in real
decoding on calibration prompts, so the target itself is chosen by end-to-end agreement
(``scripts/specee/calibrate_thresholds.py``), never on the evaluation prompts.
"""

from __future__ import annotations

import torch

from foretell.core.progress import progress
from foretell.specee.predictor import LayerPredictors

DISABLED = 1.0          # sigmoid scores are <= 1, so "score > 1.0" never fires


def precision_threshold(scores: torch.Tensor, correct: torch.Tensor, target: float, min_fires: int = 20) -> float:
    """Lowest threshold t such that the rows with ``scores > t`` are ``correct`` at least ``target``
    of the time and number at least ``min_fires``; 1.0 (never fire) when no t qualifies.

    t is placed halfway between the last included and the first excluded score (0.0 when every row
    is included), so every score tie is either wholly in or wholly out."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    s, order = torch.sort(scores.flatten().float(), descending=True)
    c = correct.flatten()[order].float()
    n = torch.arange(1, s.numel() + 1, dtype=torch.float64, device=s.device)
    prec = torch.cumsum(c.double(), 0) / n
    boundary = torch.ones_like(s, dtype=torch.bool)                 # a cut after row j separates scores
    boundary[:-1] = s[:-1] > s[1:]
    ok = (prec >= target - 1e-12) & (n >= min_fires) & boundary
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return DISABLED
    j = int(idx[-1])
    return 0.0 if j == s.numel() - 1 else float((s[j] + s[j + 1]) / 2)


@torch.no_grad()
def calibrate_thresholds(preds: LayerPredictors, feats: torch.Tensor, labels: torch.Tensor, fires: torch.Tensor | None,
                         mask: torch.Tensor, target: float, min_fires: int = 20) -> dict[int, float]:
    """Per-layer thresholds of ``preds`` on the calibration tokens ``mask`` (T,).

    ``feats`` (L, T, F) predictor inputs, ``labels`` (L, T) 1 where the layer's argmax is the final
    token, ``fires`` (L, T) where the rest of the exit rule holds (SpecEE: the argmax is among the
    draft candidates; None: always, as for the full-vocabulary peer)."""
    out = {}
    for layer in preds.config.layers:
        sel = mask if fires is None else mask & fires[layer]
        scores = preds.score(layer, feats[layer][sel])
        out[layer] = precision_threshold(scores, labels[layer][sel] > 0.5, target, min_fires)
    return out


@torch.no_grad()
def replay_exits(preds: LayerPredictors, ex: dict, mask: torch.Tensor, layers: list[int],
                 thresholds: dict[int, float]) -> dict:
    """Offline replay of the exit rule with per-layer ``thresholds`` on the tokens ``mask`` of the
    full model's trajectories (no timing, no divergence): share of exits whose token is right, mean
    layers used, share of tokens that exit."""
    n_layers = ex["labels"].shape[0]
    idx = torch.nonzero(mask).flatten()
    exit_layer = torch.full((idx.numel(),), n_layers - 1, device=idx.device)
    for l in sorted(layers, reverse=True):                       # the earliest firing layer wins
        if thresholds.get(l, DISABLED) >= DISABLED:
            continue
        fire = (preds.score(l, ex["feats"][l][idx]) > thresholds[l]) & ex["in_cands"][l][idx]
        exit_layer = torch.where(fire, torch.full_like(exit_layer, l), exit_layer)
    correct = ex["labels"][exit_layer, idx] > 0.5
    exited = exit_layer < n_layers - 1
    return {"token_precision": float(correct.float().mean()), "avg_layers": float((exit_layer + 1).float().mean()),
            "exit_rate": float(exited.float().mean()),
            "wrong_exits_per_token": float((exited & ~correct).float().mean())}


@torch.no_grad()
def end_to_end_agreement(ee, items: list[dict], max_new_tokens: int | None = None, desc: str = "calibration",
                         refs: list[list[int]] | None = None) -> dict:
    """Greedy SpecEE decoding (``ee`` with its current thresholds) of the prompts of collected
    ``items`` against their stored full-model continuations (or ``refs``, e.g. the full model's
    greedy output in another dtype): position-wise agreement, mean first divergence, layers per pass."""
    same = total = 0
    first, layers, passes = [], 0, 0
    for i, it in enumerate(progress(items, desc=desc)):
        ids = it["ids"].long()
        n = int(it["prompt_len"])
        ref = ids[n:].tolist() if refs is None else list(refs[i])
        if max_new_tokens is not None:
            ref = ref[:max_new_tokens]
        if not ref:
            continue
        out = ee.generate(ids[:n].view(1, -1), max_new_tokens=len(ref), method="specee")[0, n:].tolist()
        agree = [i < len(out) and out[i] == t for i, t in enumerate(ref)]
        same += sum(agree)
        total += len(ref)
        first.append(next((i for i, a in enumerate(agree) if not a), len(ref)))
        st = ee.last_stats
        layers += sum(st.layers[1:])                  # the prefill pass always runs every layer
        passes += len(st.layers) - 1
    return {"agreement": same / max(1, total), "first_divergence": sum(first) / max(1, len(first)),
            "avg_layers": layers / max(1, passes), "tokens": total, "prompts": len(first)}
