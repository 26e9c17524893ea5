"""Step 2 of building the shipped SpecEE assets: train the draft head and predictors.

python scripts/specee/build_assets.py [--data ~/.cache/foretell/specee/collect] [--out src/foretell/specee/assets]
Uses every shard that step 1 (collect_data.py) has written; deterministic for a given set of shards
(seed 0, single thread). Writes predictors.*, full_vocab_predictors.*, draft_head.*, calibration.json.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from foretell.core.seed import seed_everything
from foretell.specee.adapters import decoder_access
from foretell.specee.collect import load_shards
from foretell.specee.loading import cache_dir, load_model
from foretell.specee.train import train_all

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(cache_dir() / "collect"))
ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "src/foretell/specee/assets"))
ap.add_argument("--draft-epochs", type=int, default=4)
ap.add_argument("--predictor-epochs", type=int, default=30)
ap.add_argument("--threads", type=int, default=1)
args = ap.parse_args()
torch.set_num_threads(args.threads)
seed_everything(0)
t0 = time.time()
model, tok = load_model()
items = load_shards(args.data)
print(f"{len(items)} collected generations, {sum(it['layer_h'].shape[1] for it in items)} tokens", flush=True)
cal = train_all(decoder_access(model), items, args.out, draft_epochs=args.draft_epochs,
                predictor_epochs=args.predictor_epochs, seed=0)
cal["build_seconds"] = time.time() - t0
cal["shards"] = sorted(p.name for p in Path(args.data).glob("shard_*.pt"))
(Path(args.out) / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")
print(f"done in {cal['build_seconds']:.0f} s -> {args.out}", flush=True)
