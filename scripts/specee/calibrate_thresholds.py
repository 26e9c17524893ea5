"""Step 3 of building the shipped SpecEE assets: per-layer exit thresholds by precision target.

python scripts/specee/calibrate_thresholds.py [--targets 0.97 0.98 0.99 0.995 0.998] [--agreement 0.97]
    [--prompts 16] [--assets src/foretell/specee/assets] [--data ~/.cache/foretell/specee/collect]

Calibration data = the held-out 20% of the TRAINING prompts (every 5th, the predictors never
trained on them); the evaluation prompts are not touched. For each precision target: per-layer
thresholds (:func:`foretell.specee.calibrate.calibrate_thresholds`), an offline replay on all
calibration tokens, and real greedy SpecEE decoding of the first ``--prompts`` calibration prompts
against their stored full-model continuations. The chosen target is the one with the fewest layers
per pass among those whose end-to-end agreement is >= ``--agreement``; its thresholds go into
predictors.json (the full-vocabulary peer gets thresholds for the same target) and the whole sweep
into calibration.json (``threshold_calibration``).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from foretell.core.argtypes import existing_dir, float_in, int_at_least
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.report import write_text
from foretell.core.seed import seed_everything
from foretell.specee.calibrate import calibrate_thresholds, end_to_end_agreement, replay_exits
from foretell.specee.collect import load_shards
from foretell.specee.engine import SpecEE
from foretell.specee.loading import cache_dir
from foretell.specee.predictor import LayerPredictors
from foretell.specee.train import build_examples, held_out_prompts

ap = argparse.ArgumentParser()
ap.add_argument("--assets", type=existing_dir, default=str(Path(__file__).resolve().parents[2] / "src/foretell/specee/assets"))
ap.add_argument("--data", type=existing_dir, default=str(cache_dir() / "collect"))
ap.add_argument("--targets", type=float, nargs="+", default=[0.97, 0.98, 0.99, 0.995, 0.998])
ap.add_argument("--agreement", type=float_in(0.0, 1.0, low_open=True), default=0.97, help="end-to-end agreement the chosen target must keep")
ap.add_argument("--prompts", type=int_at_least(1), default=16, help="calibration prompts decoded end to end per target")
ap.add_argument("--min-fires", type=int_at_least(1), default=20, help="exits a layer needs on calibration data to be enabled")
ap.add_argument("--threads", type=int_at_least(1), default=1)
ap.add_argument("--dry-run", action="store_true", help="report only, do not write the asset JSON files")
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(args.threads)
seed_everything(0)
t0 = time.time()
assets = Path(args.assets)
ee = SpecEE.from_pretrained(None, predictors=assets, device=device)
acc, preds = ee.acc, ee.predictors
fv = LayerPredictors.load(assets, "full_vocab_predictors")
items = load_shards(args.data)
cal_items = [items[i] for i in held_out_prompts(len(items))]     # train_all's held-out split
ex = build_examples(acc, ee.draft.head, cal_items, preds.config.k)
mask = torch.ones(ex["labels"].shape[1], dtype=torch.bool, device=ex["labels"].device)
offline = list(preds.config.offline_layers)
print(f"{len(cal_items)} calibration prompts, {int(mask.sum())} tokens; end to end on {args.prompts}", flush=True)

sweep = []
for target in args.targets:
    thr = calibrate_thresholds(preds, ex["feats"], ex["labels"], ex["in_cands"], mask, target, args.min_fires)
    preds.set_thresholds(thr)
    ee.config.threshold = None
    e2e = end_to_end_agreement(ee, cal_items[: args.prompts], desc=f"target {target}")
    row = {"target_precision": target, "thresholds": {str(l): t for l, t in thr.items()},
           "enabled_layers": [l for l, t in thr.items() if t < 1.0],
           "replay": replay_exits(preds, ex, mask, offline, thr), "end_to_end": e2e}
    sweep.append(row)
    print(f"target {target}: replay {row['replay']}, end to end {e2e}", flush=True)

ok = [r for r in sweep if r["end_to_end"]["agreement"] >= args.agreement]
chosen = min(ok, key=lambda r: r["end_to_end"]["avg_layers"]) if ok else max(
    sweep, key=lambda r: r["end_to_end"]["agreement"])
target = chosen["target_precision"]
how = {"target_precision": target, "min_fires": args.min_fires, "agreement_required": args.agreement,
       "chosen_end_to_end": chosen["end_to_end"], "met": bool(ok),
       "on": f"held-out 20% of prompts_train.txt ({len(cal_items)} prompts, {int(mask.sum())} tokens); "
             f"end to end on the first {args.prompts}",
       "script": "scripts/specee/calibrate_thresholds.py"}
fv_thr = calibrate_thresholds(fv, ex["full_vocab"], ex["labels"], None, mask, target, args.min_fires)
result = {"chosen": how, "sweep": sweep, "full_vocab_thresholds": {str(l): t for l, t in fv_thr.items()},
          "seconds": round(time.time() - t0, 1), "threads": args.threads}
print(json.dumps(how, indent=2), flush=True)
if not args.dry_run:
    for name, thr in (("predictors", chosen["thresholds"]), ("full_vocab_predictors", result["full_vocab_thresholds"])):
        path = assets / f"{name}.json"
        cfg = json.loads(path.read_text())
        cfg["thresholds"], cfg["calibration"] = thr, how
        write_text(path, json.dumps(cfg, indent=2) + "\n")
    cpath = assets / "calibration.json"
    cal = json.loads(cpath.read_text())
    cal["threshold_calibration"] = result
    write_text(cpath, json.dumps(cal, indent=2) + "\n")
print(f"done in {result['seconds']:.0f} s", flush=True)
