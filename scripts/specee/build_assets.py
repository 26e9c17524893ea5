"""Step 2 of building the shipped SpecEE assets: train the draft head and predictors.

python scripts/specee/build_assets.py [--data ~/.cache/foretell/specee/collect]
    [--draft-data ~/.cache/foretell/specee/draft] [--out src/foretell/specee/assets]

Uses every shard that step 1 (collect_data.py) has written for the predictors and the draft-only
sequences of step 1b (collect_draft_data.py: ``train/`` to train the draft head, ``eval/`` =
held-out eval prompts, only measured). Deterministic for a given set of shards (seed 0, single
thread). Writes predictors.*, full_vocab_predictors.*, draft_head.*, calibration.json; the JSON
configs record how they were made (prompts, tokens, time).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from foretell.core.argtypes import existing_dir, float_in, int_at_least
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.seed import seed_everything
from foretell.specee.adapters import decoder_access
from foretell.specee.collect import load_draft_shards, load_shards
from foretell.specee.loading import cache_dir, load_model
from foretell.specee.train import train_all

ap = argparse.ArgumentParser()
ap.add_argument("--data", type=existing_dir, default=str(cache_dir() / "collect"))
ap.add_argument("--draft-data", default=str(cache_dir() / "draft"), help="'' = train the head on --data")
ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "src/foretell/specee/assets"))
ap.add_argument("--draft-epochs", type=int_at_least(1), default=8)
ap.add_argument("--draft-batch", type=int_at_least(1), default=8)
ap.add_argument("--draft-lr", type=float_in(0.0, 10.0, low_open=True), default=5e-4)
ap.add_argument("--draft-reg-weight", type=float, default=1.0)
ap.add_argument("--predictor-epochs", type=int_at_least(1), default=30)
ap.add_argument("--threads", type=int_at_least(1), default=1)
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(args.threads)
seed_everything(0)
t0 = time.time()
model, tok = load_model(device=device)
items = load_shards(args.data)
draft_items = load_draft_shards(Path(args.draft_data) / "train") if args.draft_data else []
draft_val = load_draft_shards(Path(args.draft_data) / "eval") if args.draft_data else []
n_gen = sum(it["layer_h"].shape[1] for it in items)
n_draft = sum(int(it["ids"].numel()) - it["prompt_len"] for it in draft_items)
print(f"{len(items)} collected generations, {n_gen} tokens; draft-only: {len(draft_items)} sequences, "
      f"{n_draft} generated tokens; held-out draft eval: {len(draft_val)} sequences", flush=True)
cal = train_all(decoder_access(model), items, args.out, draft_epochs=args.draft_epochs,
                predictor_epochs=args.predictor_epochs, seed=0, draft_items=draft_items or None,
                draft_val_items=draft_val or None, draft_batch=args.draft_batch,
                draft_reg_weight=args.draft_reg_weight, draft_lr=args.draft_lr)
made = {"script": "scripts/specee/build_assets.py", "predictor_prompts": "prompts_train.txt",
        "predictor_sequences": len(items), "predictor_tokens": n_gen,
        "draft_prompts": "prompts_draft.txt" if draft_items else "prompts_train.txt",
        "draft_sequences": len(draft_items) or len(items), "draft_generated_tokens": n_draft or n_gen,
        "draft_held_out": "prompts_eval.txt (measured only)" if draft_val else None,
        "build_seconds": round(time.time() - t0, 1), "threads": args.threads, "device": str(device),
        "args": {k: v for k, v in vars(args).items() if k not in ("data", "draft_data", "out")}}
for key, d in (("collect_info", args.data), ("draft_collect_info", args.draft_data)):
    info = Path(d) / "collect_info.json" if d else None
    if info is not None and info.is_file():
        made[key] = json.loads(info.read_text())
cal["made"] = made
cal["build_seconds"] = made["build_seconds"]
cal["shards"] = sorted(p.name for p in Path(args.data).glob("shard_*.pt"))
out = Path(args.out)
(out / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")
for name in ("predictors", "full_vocab_predictors", "draft_head"):
    cfg = json.loads((out / f"{name}.json").read_text())
    if name == "draft_head":
        cfg["made"] = made
    else:
        cfg.setdefault("extra", {})["made"] = made
    (out / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")
print(f"done in {made['build_seconds']:.0f} s -> {args.out}", flush=True)
