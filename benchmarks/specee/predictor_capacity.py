"""Is SpecEE's exit rate on SmolLM2 limited by the predictor, or by what the layers know?

python benchmarks/specee/predictor_capacity.py [--data ~/.cache/foretell/specee/collect]
    [--precision 0.99,0.995,0.999] --json benchmarks/specee/predictor_capacity_smollm2.json

On the collected trajectories of the training prompts (step 1 of the assets, full-model greedy
generations with every layer's hidden state), with the shipped draft head's candidates, several
scorers are fitted per offline layer on the training part and their exit thresholds calibrated
to a precision target, the way the shipped thresholds are. Then the exit rule (earliest offline
layer whose score clears its threshold and whose argmax is among the k candidates) is replayed on
held-out prompts. Scorers:

- ``mlp_12``: the paper's predictor, 12 candidate features -> 512 -> 1, retrained here;
- ``boosted_12``: gradient-boosted trees on the same 12 features (a stronger model, same inputs);
- ``probe_hidden``: logistic regression on the layer's whole normalised hidden state plus the 12
  features (what the layer itself knows, linearly);
- ``mlp_hidden``: an MLP (256 hidden units) on the same inputs (the same, non-linearly);
- ``perfect``: the label itself (the exit rule's own ceiling: candidates + offline layers);
- ``perfect_all_layers``: the same at every layer (what the online window could add at most).

The held-out prompts (every 5th, as for the shipped thresholds) are split in two halves by prompt;
thresholds calibrated on one half are replayed on the other and vice versa (cross-fitting).
Reports per scorer and precision target: the share of the oracle's layer saving, exit rate and
wrong exits per token.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from foretell.core.argtypes import existing_dir, seed_int
from foretell.core.report import write_json
from foretell.core.seed import seed_everything
from foretell.specee.adapters import decoder_access
from foretell.specee.calibrate import DISABLED, precision_threshold
from foretell.specee.collect import load_shards
from foretell.specee.draft import DraftHead
from foretell.specee.engine import ASSETS
from foretell.specee.loading import cache_dir, load_model
from foretell.specee.predictor import LayerPredictors, PredictorConfig
from foretell.specee.train import build_examples, held_out_prompts, train_predictors


def precisions(text: str) -> list[float]:
    vals = [float(v) for v in text.split(",") if v.strip()]
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"precision targets must be in (0, 1], got {text!r}")
    return vals


def replay(scores: dict[int, torch.Tensor], thresholds: dict[int, float], ex: dict, idx: torch.Tensor, n_layers: int) -> dict:
    """The exit rule on tokens ``idx``: earliest layer with score > threshold and argmax in the candidates."""
    exit_layer = torch.full((idx.numel(),), n_layers - 1)
    for layer in sorted(scores, reverse=True):
        if thresholds[layer] >= DISABLED:
            continue
        fire = (scores[layer][idx] > thresholds[layer]) & ex["in_cands"][layer][idx]
        exit_layer = torch.where(fire, torch.full_like(exit_layer, layer), exit_layer)
    correct = ex["labels"][exit_layer, idx] > 0.5
    exited = exit_layer < n_layers - 1
    return {"layers": float((exit_layer + 1).sum()), "tokens": int(idx.numel()), "exits": int(exited.sum()),
            "wrong": int((exited & ~correct).sum()), "oracle_layers": float((ex["oracle"][idx] + 1).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=existing_dir, default=str(cache_dir() / "collect"))
    ap.add_argument("--precision", type=precisions, default="0.99,0.995,0.999")
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    torch.set_num_threads(2)
    seed_everything(args.seed)
    t0, load = time.time(), [os.getloadavg()[0]]
    model, _ = load_model()
    acc = decoder_access(model)
    n_layers = acc.num_layers
    items = load_shards(args.data)
    head = DraftHead.load(acc, ASSETS)
    ex = build_examples(acc, head, items, k=4)
    ex = {key: v.cpu() for key, v in ex.items()}
    offline = LayerPredictors.load(ASSETS).config.offline_layers
    held = sorted(held_out_prompts(len(items)))
    train = ~torch.isin(ex["prompt"], torch.tensor(held))
    halves = [torch.isin(ex["prompt"], torch.tensor(held[0::2])), torch.isin(ex["prompt"], torch.tensor(held[1::2]))]
    fit_idx = torch.nonzero(train).flatten()
    with torch.no_grad():                                          # normalised hidden states, offline layers only
        hidden = {}
        for layer in offline:
            hidden[layer] = torch.cat([acc.norm(it["layer_h"][layer].float()) for it in items]).numpy()

    scores: dict[str, dict[int, torch.Tensor]] = {
        "perfect": {l: ex["labels"][l].clone() for l in offline},
        "perfect_all_layers": {l: ex["labels"][l].clone() for l in range(n_layers - 1)}}
    cfg = PredictorConfig(model_id=acc.model_id, num_layers=n_layers, hidden_size=acc.hidden_size,
                          vocab_size=acc.vocab_size, layers=list(offline), offline_layers=list(offline))
    mlp, _ = train_predictors(ex["feats"], ex["labels"], train, cfg, seed=args.seed)
    with torch.no_grad():
        scores["mlp_12"] = {l: mlp.score(l, ex["feats"][l]) for l in offline}

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scores["boosted_12"], scores["probe_hidden"], scores["mlp_hidden"] = {}, {}, {}
    fit = fit_idx.numpy()
    for layer in offline:
        x12, y = ex["feats"][layer].numpy(), ex["labels"][layer].numpy() > 0.5
        gb = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=args.seed).fit(x12[fit], y[fit])
        scores["boosted_12"][layer] = torch.from_numpy(gb.predict_proba(x12)[:, 1]).float()
        xh = np.concatenate([hidden[layer], x12], axis=1)
        scaler = StandardScaler().fit(xh[fit])
        lr = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(xh[fit]), y[fit])
        scores["probe_hidden"][layer] = torch.from_numpy(lr.predict_proba(scaler.transform(xh))[:, 1]).float()
        net = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, max_iter=200,
                            random_state=args.seed).fit(scaler.transform(xh[fit]), y[fit])
        scores["mlp_hidden"][layer] = torch.from_numpy(net.predict_proba(scaler.transform(xh))[:, 1]).float()

    results = {}
    for name, sc in scores.items():
        results[name] = {}
        for target in args.precision:
            tot = {"layers": 0.0, "tokens": 0, "exits": 0, "wrong": 0, "oracle_layers": 0.0}
            for cal, rep in ((0, 1), (1, 0)):
                thr = {}
                for l in sc:
                    sel = halves[cal] & ex["in_cands"][l]
                    thr[l] = precision_threshold(sc[l][sel], ex["labels"][l][sel] > 0.5, target, min_fires=10)
                r = replay(sc, thr, ex, torch.nonzero(halves[rep]).flatten(), n_layers)
                for key in tot:
                    tot[key] += r[key]
            saving, oracle_saving = n_layers * tot["tokens"] - tot["layers"], n_layers * tot["tokens"] - tot["oracle_layers"]
            results[name][str(target)] = {"avg_layers": tot["layers"] / tot["tokens"],
                                          "fraction_of_oracle_saving": saving / oracle_saving,
                                          "exit_rate": tot["exits"] / tot["tokens"],
                                          "wrong_exits_per_token": tot["wrong"] / tot["tokens"],
                                          "exit_precision": 1 - tot["wrong"] / max(1, tot["exits"])}
    n_eval = int((halves[0] | halves[1]).sum())
    report = {"model": acc.model_id, "tokens": int(ex["oracle"].numel()), "fit_tokens": int(train.sum()),
              "held_out_tokens": n_eval, "held_out_prompts": len(held), "offline_layers": offline,
              "held_out_oracle_avg_layers": float((ex["oracle"][halves[0] | halves[1]] + 1).float().mean()),
              "scorers": results, "seconds": time.time() - t0,
              "config": {"seed": args.seed, "precision_targets": args.precision, "torch_threads": 2,
                         "data": str(Path(args.data)), "load_average_1min": load + [os.getloadavg()[0]]}}
    write_json(args.json, report)
    for name, per in results.items():
        row = "  ".join(f"p{t}: {r['fraction_of_oracle_saving']:.1%} of oracle, prec {r['exit_precision']:.3f}"
                        for t, r in per.items())
        print(f"{name:>13}: {row}")


if __name__ == "__main__":
    main()
