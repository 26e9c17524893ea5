"""Training the draft head and the exit predictors from collected full-model generations.

``train_all`` = (1) draft vocabulary subset by token frequency, (2) EAGLE-style draft head by
teacher forcing on the target's states (CE on the target's next token + feature regression),
(3) per-layer predictor features from the draft's top-k candidates with
:func:`foretell.specee.features.all_layer_features` (the same code as inference), labels
"layer argmax == final argmax", BCE training, (4) offline layer set from the oracle exits,
(5) the peers' calibration: full-vocab predictors and the AdaInfer gap threshold, (6) per-layer
exit thresholds of both predictor kinds calibrated on the held-out 20% of the prompts
(:mod:`foretell.specee.calibrate`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from foretell.core.progress import progress
from foretell.core.report import write_text
from foretell.specee.adapters import DecoderAccess
from foretell.specee.calibrate import calibrate_thresholds, replay_exits
from foretell.specee.draft import DraftHead
from foretell.specee.features import NUM_FULL_VOCAB_FEATURES, all_layer_features, num_features
from foretell.specee.predictor import LayerPredictors, PredictorConfig
from foretell.specee.scheduler import choose_offline_layers, oracle_exit_layers


DEFAULT_PRECISION_TARGET = 0.995        # chosen for SmolLM2 by end-to-end agreement (calibrate_thresholds.py)


def draft_vocab(items: list[dict], vocab_size: int, size: int) -> torch.Tensor:
    """Most frequent tokens of the collected sequences, then the lowest ids, ``size`` in all."""
    counts = Counter()
    for it in items:
        counts.update(it["ids"].tolist())
    chosen = [t for t, _ in counts.most_common(size)]
    seen = set(chosen)
    t = 0
    while len(chosen) < min(size, vocab_size):
        if t not in seen:
            chosen.append(t)
        t += 1
    return torch.tensor(sorted(chosen), dtype=torch.long, device="cpu")


def _draft_inputs(acc: DecoderAccess, it: dict):
    """(tokens, the target's normalised states before them, positions) of a collected sequence on
    the model's device, the states in the model's dtype (normalised from the stored state as the
    model's own norm does)."""
    dev = acc.device
    ids = it["ids"].to(dev).long()
    states = it["final_normed"].to(dev, acc.dtype) if "final_normed" in it \
        else acc.norm(it["final_h"].to(dev, acc.dtype))
    return ids[1:], states[:-1], torch.arange(1, ids.numel(), device=dev)


@torch.no_grad()
def draft_sequences(acc: DecoderAccess, items: list[dict]) -> list[dict]:
    """Teacher-forcing pairs of the draft head (EAGLE recipe) for each collected sequence.

    Input j is (token ``ids[j+1]``, the target's normalised state ``f_j``) at position j+1; its
    labels are the target's argmax after position j+1 (class) and ``f_{j+1}`` (regression). The loss
    mask keeps the outputs that predict generated tokens (as EAGLE masks the user turns) and drops
    the last one (nothing follows it in the data).
    """
    seqs = []
    for it in items:
        tokens, states, pos = _draft_inputs(acc, it)
        n, dev = tokens.numel(), tokens.device
        if "target_next" in it:
            target = it["target_next"].to(dev).long()
        else:                        # collected trajectory: the final layer's argmax at generated positions
            target = torch.zeros(n + 1, dtype=torch.long, device=dev)             # (masked elsewhere)
            target[it["prompt_len"] - 1: n] = it["layer_argmax"][-1].to(dev).long()
        mask = torch.zeros(n, dtype=torch.bool, device=dev)
        mask[max(0, it["prompt_len"] - 2): n - 1] = True
        seqs.append({"tokens": tokens, "states": states, "labels": target[1:], "next_states": states[1:],
                     "mask": mask})
    return seqs


def _batches(seqs: list[dict], size: int, order: list[int]):
    """Right-padded batches on the sequences' device (causal attention never sees the padding of
    a valid row)."""
    for s in range(0, len(order), size):
        group = [seqs[i] for i in order[s:s + size]]
        n = max(g["tokens"].numel() for g in group)
        d = group[0]["states"].shape[-1]
        B, dev = len(group), group[0]["states"].device
        out = {"tokens": torch.zeros(B, n, dtype=torch.long, device=dev), "states": torch.zeros(B, n, d, device=dev),
               "labels": torch.zeros(B, n, dtype=torch.long, device=dev), "next": torch.zeros(B, n, d, device=dev),
               "mask": torch.zeros(B, n, dtype=torch.bool, device=dev)}
        for b, g in enumerate(group):
            m = g["tokens"].numel()
            out["tokens"][b, :m], out["states"][b, :m] = g["tokens"], g["states"]
            out["labels"][b, :m], out["mask"][b, :m] = g["labels"], g["mask"]
            out["next"][b, : m - 1] = g["next_states"]
        yield out


@torch.no_grad()
def draft_accuracy(head: DraftHead, seqs: list[dict], k: int = 4, batch: int = 16) -> dict:
    """Teacher-forced top-1 / top-k accuracy of the head on the masked positions of ``seqs``."""
    head.eval()
    vocab = head.vocab_ids
    hit1 = hitk = total = 0
    order = sorted(range(len(seqs)), key=lambda i: seqs[i]["tokens"].numel())
    for bt in _batches(seqs, batch, order):
        n = bt["tokens"].shape[1]
        scores, _ = head(bt["tokens"], bt["states"], torch.arange(1, n + 1, device=head.device))
        top = vocab[torch.topk(scores, k, dim=-1).indices]                      # (B, n, k)
        m = bt["mask"]
        hit1 += int((top[..., 0] == bt["labels"])[m].sum())
        hitk += int((top == bt["labels"].unsqueeze(-1)).any(-1)[m].sum())
        total += int(m.sum())
    return {"top1": hit1 / max(1, total), f"top{k}": hitk / max(1, total), "tokens": total}


def train_draft_head(acc: DecoderAccess, items: list[dict], vocab_ids: torch.Tensor, *, epochs: int = 6,
                     lr: float = 5e-4, seed: int = 0, batch: int = 8, reg_weight: float = 1.0,
                     noise: float = 0.2, val_items: list[dict] | None = None, k: int = 4, log=print) -> DraftHead:
    """Teacher-forced training of the draft head (EAGLE-1 recipe, adapted).

    Loss on the masked positions: cross-entropy against the target's argmax (over the head's
    vocabulary subset) + ``reg_weight`` x smooth-L1 between the head's normalised output state and
    the target's next normalised state; uniform noise of width ``noise`` on the input states (EAGLE's
    data noise); AdamW, linear decay, gradient clipping; ``batch`` sequences per step.
    """
    torch.manual_seed(seed)
    dev = acc.device
    head = DraftHead(acc, vocab_ids).to(dev)
    vocab_ids = vocab_ids.to(dev)
    for p in acc.model.parameters():
        p.requires_grad_(False)
    seqs = draft_sequences(acc, items)
    val = draft_sequences(acc, val_items) if val_items else None
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95),
                            weight_decay=0.0)
    remap = torch.full((acc.vocab_size,), -100, dtype=torch.long, device=dev)
    remap[vocab_ids] = torch.arange(vocab_ids.numel(), device=dev)
    rng = random.Random(seed)
    by_len = sorted(range(len(seqs)), key=lambda i: seqs[i]["tokens"].numel())
    groups = [by_len[s:s + batch] for s in range(0, len(by_len), batch)]       # similar lengths together
    total = max(1, epochs * len(groups))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.02, 1 - s / total))
    head.history = []
    for ep in range(epochs):
        head.train()
        rng.shuffle(groups)
        tot, n = 0.0, 0
        for group in progress(groups, desc=f"draft epoch {ep + 1}/{epochs}"):
            bt = next(_batches(seqs, len(group), group))
            L = bt["tokens"].shape[1]
            states = bt["states"] + (torch.rand_like(bt["states"]) - 0.5) * noise if noise else bt["states"]
            scores, g = head(bt["tokens"], states, torch.arange(1, L + 1, device=dev))
            m = bt["mask"]
            ce = F.cross_entropy(scores[m], remap[bt["labels"][m]], ignore_index=-100)
            reg = F.smooth_l1_loss(acc.norm(g)[m], bt["next"][m])
            loss = ce + reg_weight * reg
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            tot = tot + ce.detach().double()         # float64 sum in order: as the Python float sum was
            n += 1
        rec = {"epoch": ep + 1, "train_ce": float(tot) / max(1, n)}
        if val:
            rec.update({f"val_{key}": v for key, v in draft_accuracy(head, val, k).items()})
        head.history.append(rec)
        log(f"draft epoch {ep + 1}: " + ", ".join(f"{key} {v:.3f}" if isinstance(v, float) else f"{key} {v}"
                                                  for key, v in rec.items()))
    return head.eval()


@torch.no_grad()
def stored_state_features(acc: DecoderAccess, layer_h: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """Training features of collected states ``layer_h`` (L, G, d) (stored float16) for candidates
    (G, k): normalised in the model's dtype exactly as inference does, then
    :func:`~foretell.specee.features.all_layer_features` -> (L, G, 3k) float32."""
    return all_layer_features(acc.norm(layer_h.to(acc.device, acc.dtype)), acc.lm_head.weight[cands])


@torch.no_grad()
def build_examples(acc: DecoderAccess, head: DraftHead, items: list[dict], k: int) -> dict:
    """Per generated token: candidate features of every layer, labels, full-vocab features, oracle."""
    feats, labels, fv, oracle, in_cands, top1 = [], [], [], [], [], []
    prompt_of = []
    for n_it, it in enumerate(progress(items, desc="features")):
        tokens, states, pos = _draft_inputs(acc, it)
        scores, _ = head(tokens.view(1, -1), states.view(1, -1, states.shape[-1]), pos)
        g0 = it["prompt_len"] - 1
        gen_scores = scores[0, g0 - 1: g0 - 1 + it["layer_h"].shape[1]]    # input index = position - 1
        cands = head.vocab_ids[torch.topk(gen_scores, k, dim=-1).indices]   # (G, k)
        feats.append(stored_state_features(acc, it["layer_h"], cands))      # (L, G, 3k)
        am = it["layer_argmax"].to(acc.device).long()
        labels.append((am == am[-1:]).float())
        in_cands.append((am.unsqueeze(-1) == cands.unsqueeze(0)).any(-1))
        fv.append(it["full_vocab_feats"].to(acc.device).float())
        oracle.append(oracle_exit_layers(am))
        top1.append(cands[:, 0] == am[-1])
        prompt_of.append(torch.full((am.shape[1],), n_it, device=acc.device))
    return {"feats": torch.cat(feats, 1), "labels": torch.cat(labels, 1), "full_vocab": torch.cat(fv, 1),
            "oracle": torch.cat(oracle), "in_cands": torch.cat(in_cands, 1), "draft_top1": torch.cat(top1),
            "prompt": torch.cat(prompt_of)}


def train_predictors(x: torch.Tensor, y: torch.Tensor, train_mask: torch.Tensor, config: PredictorConfig, *,
                     epochs: int = 30, lr: float = 1e-3, batch: int = 256, seed: int = 0) -> tuple[LayerPredictors, dict]:
    """BCE training of one MLP per layer in ``config.layers``; returns (predictors, val metrics)."""
    torch.manual_seed(seed)
    preds = LayerPredictors(config).to(x.device)
    metrics = {}
    for layer in progress(config.layers, desc=f"{config.feature_kind} predictors"):
        mlp = preds.mlps[str(layer)]
        xs, ys = x[layer][train_mask], y[layer][train_mask]
        opt = torch.optim.Adam(mlp.parameters(), lr=lr)
        for _ in range(epochs):
            perm = torch.randperm(xs.shape[0], device=xs.device)
            for s in range(0, xs.shape[0], batch):
                b = perm[s:s + batch]
                loss = F.binary_cross_entropy_with_logits(preds.logit(layer, xs[b]), ys[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            vx, vy = x[layer][~train_mask], y[layer][~train_mask]
            fire = preds.score(layer, vx) > 0.5
            tp = float((fire & (vy > 0.5)).sum())
            metrics[layer] = {"val_positive_rate": float(vy.mean()) if vy.numel() else None,
                              "val_fire_rate": float(fire.float().mean()) if vy.numel() else None,
                              "val_precision": tp / max(1.0, float(fire.sum())),
                              "val_recall": tp / max(1.0, float((vy > 0.5).sum()))}
    return preds.eval(), metrics


def calibrate_gap(full_vocab: torch.Tensor, labels: torch.Tensor, layers: list[int], precision: float = 0.99) -> float:
    """Smallest AdaInfer gap threshold whose exits on ``layers`` are right ``precision`` of the time."""
    gap = (full_vocab[..., 0] - full_vocab[..., 1])[layers].flatten()
    lab = labels[layers].flatten()
    for t in [i / 100 for i in range(0, 100)]:
        fire = gap > t
        if fire.sum() == 0 or float(lab[fire].mean()) >= precision:
            return t
    return 0.99


@torch.no_grad()
def simulate_exits(preds: LayerPredictors, ex: dict, mask: torch.Tensor, layers: list[int],
                   thresholds=(0.5, 0.7, 0.8, 0.9, 0.95)) -> dict:
    """Offline replay of the exit rule on held-out tokens (full-model trajectory, no timing) at a
    few uniform thresholds: per threshold, :func:`~foretell.specee.calibrate.replay_exits`."""
    return {str(thr): replay_exits(preds, ex, mask, layers, {l: thr for l in layers}) for thr in thresholds}


def held_out_prompts(n_prompts: int) -> list[int]:
    """Indices of the prompts held out from predictor training for validation and threshold
    calibration: every 5th (an 80/20 split by prompt)."""
    return list(range(0, n_prompts, 5))


def train_all(acc: DecoderAccess, items: list[dict], out_dir: Path, *, k: int = 4, draft_vocab_size: int = 4096,
              draft_epochs: int = 6, predictor_epochs: int = 30, seed: int = 0, draft_items: list[dict] | None = None,
              draft_val_items: list[dict] | None = None, draft_batch: int = 8, draft_reg_weight: float = 1.0,
              draft_lr: float = 5e-4, threshold_target: float = DEFAULT_PRECISION_TARGET, log=print) -> dict:
    """Everything `foretell specee train` builds; writes the asset files into ``out_dir``.

    ``items``: per-layer collections (:func:`~foretell.specee.collect.collect_one`) for the
    predictors. ``draft_items``: extra draft-only sequences (:func:`~foretell.specee.collect.
    collect_draft_batch`); when given, the draft head trains on them ONLY, so the predictor features
    of ``items`` come from a head that never saw those sequences (as at inference).
    ``draft_val_items``: held-out sequences that only measure the head. ``threshold_target``:
    exit precision each layer's calibrated threshold must reach on the held-out 20% of ``items``.
    """
    out_dir = Path(out_dir)
    n_layers = acc.num_layers
    vocab_ids = draft_vocab(items + list(draft_items or []), acc.vocab_size, draft_vocab_size)
    head = train_draft_head(acc, draft_items or items, vocab_ids, epochs=draft_epochs, seed=seed, batch=draft_batch,
                            reg_weight=draft_reg_weight, lr=draft_lr, val_items=draft_val_items, k=k, log=log)
    draft_eval = {"collected": draft_accuracy(head, draft_sequences(acc, items), k)}
    if draft_val_items:
        draft_eval["held_out"] = draft_accuracy(head, draft_sequences(acc, draft_val_items), k)
    ex = build_examples(acc, head, items, k)
    n_prompts = len(items)
    val_prompts = set(held_out_prompts(n_prompts))
    train_mask = ~torch.isin(ex["prompt"], torch.tensor(sorted(val_prompts), device=ex["prompt"].device))
    oracle = ex["oracle"]
    offline = choose_offline_layers(oracle[train_mask], n_layers)
    layers = list(range(n_layers - 1))
    base = dict(model_id=acc.model_id, num_layers=n_layers, hidden_size=acc.hidden_size, vocab_size=acc.vocab_size,
                k=k, layers=layers, offline_layers=offline)
    cfg = PredictorConfig(in_features=num_features(k), feature_kind="candidates", **base)
    preds, metrics = train_predictors(ex["feats"], ex["labels"], train_mask, cfg, epochs=predictor_epochs, seed=seed)
    fv_cfg = PredictorConfig(in_features=NUM_FULL_VOCAB_FEATURES, feature_kind="full_vocab", **base)
    fv_preds, fv_metrics = train_predictors(ex["full_vocab"], ex["labels"], train_mask, fv_cfg,
                                            epochs=predictor_epochs, seed=seed)
    gap = calibrate_gap(ex["full_vocab"][:, train_mask], ex["labels"][:, train_mask], offline)
    hist = torch.bincount(oracle, minlength=n_layers).tolist()
    sweep = simulate_exits(preds, ex, ~train_mask, offline)
    calibration = {
        "tokens": int(oracle.numel()), "prompts": n_prompts, "k": k, "draft_vocab": int(vocab_ids.numel()),
        "oracle_exit_histogram": hist, "oracle_avg_layers": float((oracle + 1).float().mean()),
        "offline_layers": offline, "adainfer_gap": gap,
        "draft_top1_accuracy": float(ex["draft_top1"].float().mean()),
        "final_token_in_draft_topk": float(ex["in_cands"][-1].float().mean()),
        "exit_replay_val": sweep, "val_oracle_avg_layers": float((oracle[~train_mask] + 1).float().mean()),
        "draft_top1_accuracy_val": float(ex["draft_top1"][~train_mask].float().mean()),
        "predictor_val": metrics, "full_vocab_predictor_val": fv_metrics,
        "draft_accuracy": draft_eval, "draft_history": head.history,
        "draft_training": {"sequences": len(draft_items or items), "on": "draft_items" if draft_items else "items",
                           "epochs": draft_epochs, "batch": draft_batch, "reg_weight": draft_reg_weight, "lr": draft_lr},
    }
    val = ~train_mask
    thr = calibrate_thresholds(preds, ex["feats"], ex["labels"], ex["in_cands"], val, threshold_target)
    fv_thr = calibrate_thresholds(fv_preds, ex["full_vocab"], ex["labels"], None, val, threshold_target)
    how = {"target_precision": threshold_target, "on": "held-out 20% of the training prompts (every 5th)",
           "tokens": int(val.sum())}
    preds.set_thresholds(thr, how)
    fv_preds.set_thresholds(fv_thr, how)
    calibration["calibrated_thresholds"] = {"target_precision": threshold_target, "thresholds": thr,
                                            "replay_val": replay_exits(preds, ex, val, offline, thr)}
    preds.config.extra = {"adainfer_gap": gap}
    preds.save(out_dir, "predictors")
    fv_preds.save(out_dir, "full_vocab_predictors")
    head.save(out_dir, "draft_head", extra={"k": k, "epochs": draft_epochs, "accuracy": draft_eval})
    write_text(out_dir / "calibration.json", json.dumps(calibration, indent=2) + "\n")
    log(f"oracle avg layers {calibration['oracle_avg_layers']:.2f}, offline layers {offline}, "
        f"draft top-1 {calibration['draft_top1_accuracy']:.3f}, top-{k} {calibration['final_token_in_draft_topk']:.3f}")
    return calibration
