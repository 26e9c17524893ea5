"""Side-by-side timing of two SpecEE asset sets (draft head + predictors + thresholds) on one model.

python scripts/specee/draft_compare.py --a src/foretell/specee/assets --b DIR [--num-prompts 10]
    [--max-new-tokens 48] [--methods speculative,specee+speculative,specee] [--seed 5] --json OUT

Same protocol as the bench: one warm-up, then per prompt every variant in rotating order (one torch
thread, one shared model); speed-up = tokens/s against `full` measured in the same run. Also
records each set's held-out draft accuracy from its ``draft_head.json``. Used to decide whether a
rebuilt asset set replaces the shipped one.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from foretell.core.argtypes import existing_dir, int_at_least, seed_int
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.report import write_json
from foretell.core.seed import seed_everything
from foretell.specee.engine import SpecEE
from foretell.specee.loading import chat_ids, read_prompts
from foretell.specee.rotation import time_in_rotation

METHODS = ("speculative", "specee+speculative", "specee")


def method_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad or text!r}; choose from {', '.join(METHODS)}")
    return names


ap = argparse.ArgumentParser()
ap.add_argument("--a", type=existing_dir, required=True, help="first asset directory (the baseline)")
ap.add_argument("--b", type=existing_dir, required=True, help="second asset directory")
ap.add_argument("--num-prompts", type=int_at_least(1), default=10)
ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
ap.add_argument("--methods", type=method_list, default="speculative,specee+speculative,specee")
ap.add_argument("--seed", type=seed_int, default=5)
ap.add_argument("--json", required=True)
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(1)
seed_everything(args.seed)
load = [os.getloadavg()[0]]
sets = {"a": SpecEE.from_pretrained(None, predictors=args.a, device=device)}
sets["b"] = SpecEE.from_pretrained(sets["a"].model, predictors=args.b, tokenizer=sets["a"].tokenizer)
inputs = [chat_ids(sets["a"].tokenizer, p) for p in read_prompts(None, "eval")[: args.num_prompts]]
variants = [("full", "a", "full")] + [(f"{m}[{s}]", s, m) for m in args.methods for s in ("a", "b")]
for s in sets.values():
    s.generate(inputs[0], max_new_tokens=4, method="speculative")


def variant(s: str, method: str):
    def run(pi, ids):
        out = sets[s].generate(ids, max_new_tokens=args.max_new_tokens, method=method)
        return out, len(sets[s].last_stats.layers)
    return run


res = time_in_rotation({n: variant(s, m) for n, s, m in variants}, inputs, device=device)
draft = {s: json.loads((Path(d) / "draft_head.json").read_text()).get("accuracy") for s, d in (("a", args.a), ("b", args.b))}
write_json(args.json, {"prompts": len(inputs), "new_tokens": args.max_new_tokens, "methods": res,
                       "assets": {"a": str(args.a), "b": str(args.b)}, "draft_accuracy": draft,
                       "config": {"torch_threads": 1, "seed": args.seed, "gamma": sets["a"].config.gamma,
                                  "tree": list(sets["a"].config.tree), "device": str(device),
                                  "linear_kernel": sets["a"].linear_kernel,
                                  "load_average_1min": load + [os.getloadavg()[0]]}})
for n, m in res.items():
    print(f"{n:>24}: x{m['speedup']:.3f}  {m['tokens_per_pass']:.2f} tokens/pass  agreement {m['agreement']:.3f}")
