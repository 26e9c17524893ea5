"""Speculative sampling vs the full model's own sampling on SmolLM2 (float32, CPU), side by side.

python scripts/specee/sampling_timing.py [--num-prompts 10] [--max-new-tokens 48] [--temperature 0.7]
    [--top-p 0.9] [--gammas 2,3,4] [--seed 0] --json benchmarks/specee/sampling_timing.json

Every variant on every held-out prompt in rotating order after a warm-up, one torch thread; each
generation gets its own seeded generator. Speed-up = tokens/s against `full` sampling in the same
run. Sampled outputs differ between methods by design (they only share the distribution, which
the tests check on a tiny model), so no agreement is reported; tokens per pass says how many
draft tokens the rejection rule kept.
"""

import argparse
import os

import torch

from foretell.core.argtypes import float_in, int_at_least, int_list, seed_int
from foretell.core.report import write_json
from foretell.specee.engine import SpecEE
from foretell.specee.loading import chat_ids, read_prompts
from foretell.specee.rotation import time_in_rotation

ap = argparse.ArgumentParser()
ap.add_argument("--num-prompts", type=int_at_least(1), default=10)
ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
ap.add_argument("--temperature", type=float_in(0.0, 10.0, low_open=True), default=0.7)
ap.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), default=0.9)
ap.add_argument("--gammas", type=int_list(1), default="2,3,4")
ap.add_argument("--seed", type=seed_int, default=0)
ap.add_argument("--json", required=True)
args = ap.parse_args()

torch.set_num_threads(1)
load = [os.getloadavg()[0]]
ee = SpecEE.from_pretrained(None)
inputs = [chat_ids(ee.tokenizer, p) for p in read_prompts(None, "eval")[: args.num_prompts]]
variants = [("full", None)] + [(f"speculative_sampling_gamma{g}", g) for g in args.gammas]
sample = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
ee.generate(inputs[0], method="full", generator=torch.Generator().manual_seed(0), **{**sample, "max_new_tokens": 4})


def variant(gamma):
    def run(pi, ids):
        if gamma:
            ee.config.gamma = gamma
        gen = torch.Generator().manual_seed(args.seed * 1000 + pi)
        out = ee.generate(ids, method="speculative" if gamma else "full", generator=gen, **sample)
        return out, len(ee.last_stats.layers)
    return run


res = time_in_rotation({n: variant(g) for n, g in variants}, inputs)
for m in res.values():
    del m["agreement"]                           # sampled outputs differ by design
write_json(args.json, {"prompts": len(inputs), "new_tokens": args.max_new_tokens, "methods": res,
                       "config": {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                                  "torch_threads": 1, "linear_kernel": ee.linear_kernel,
                                  "load_average_1min": load + [os.getloadavg()[0]]}})
for n, m in res.items():
    print(f"{n:>28}: x{m['speedup']:.3f}  {m['tokens_per_pass']:.2f} tokens/pass  ({m['new_tokens']} tokens)")
