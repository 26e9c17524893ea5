"""Side-by-side timing of `speculative` and `specee+speculative` for several draft chain lengths
(and draft trees: the chain plus side leaves per depth).

python scripts/specee/gamma_sweep.py [--num-prompts 6] [--max-new-tokens 48] [--gammas 1,2,3,4]
    [--trees chain 3 2,1 ...] [--no-merged] [--dtype float32|bfloat16] --json OUT

Same protocol as the bench: one warm-up, then per prompt every variant in rotating order
(one torch thread); speed-up = tokens/s against `full` measured in the same run.
"""

import argparse
import os

import torch

from foretell.core.argtypes import int_at_least, int_list
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.report import write_json
from foretell.specee.engine import SpecEE
from foretell.specee.loading import chat_ids, read_prompts
from foretell.specee.rotation import time_in_rotation
from foretell.specee.tree import parse_tree

ap = argparse.ArgumentParser()
ap.add_argument("--num-prompts", type=int_at_least(1), default=6)
ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
ap.add_argument("--gammas", type=int_list(1), default="1,2,3,4")
ap.add_argument("--trees", type=parse_tree, nargs="+", default=[()],
                help="draft trees: side leaves per depth, e.g. chain 3 2,1 (default: chain)")
ap.add_argument("--no-merged", action="store_true", help="time `speculative` only")
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
ap.add_argument("--json", required=True)
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(1)
load = [os.getloadavg()[0]]
ee = SpecEE.from_pretrained(None, torch_dtype=args.dtype, device=device)
inputs = [chat_ids(ee.tokenizer, p) for p in read_prompts(None, "eval")[: args.num_prompts]]
variants = [("full", None)]
for g in args.gammas:
    variants += [(f"speculative_gamma{g}" + (f"_tree{','.join(map(str, t))}" if t else ""), ("speculative", g, t))
                 for t in args.trees if len(t) <= g]
    if not args.no_merged:
        variants += [(f"specee+speculative_gamma{g}" + (f"_tree{','.join(map(str, t))}" if t else ""),
                      ("specee+speculative", g, t)) for t in args.trees if len(t) <= g]
ee.generate(inputs[0], max_new_tokens=4, method="full")


def variant(spec):
    def run(pi, ids):
        if spec:
            ee.config.gamma, ee.config.tree = spec[1], spec[2]
        out = ee.generate(ids, max_new_tokens=args.max_new_tokens, method=spec[0] if spec else "full")
        return out, len(ee.last_stats.layers)
    return run


res = time_in_rotation({n: variant(spec) for n, spec in variants}, inputs, device=device)
for n, spec in variants:
    res[n]["rows_per_verify"] = None if not spec else spec[1] + 1 + sum(spec[2])
write_json(args.json, {"prompts": len(inputs), "new_tokens": args.max_new_tokens, "methods": res,
                       "config": {"torch_threads": 1, "k": ee.config.k, "threshold": ee.config.threshold,
                                  "dtype": args.dtype, "device": str(device), "linear_kernel": ee.linear_kernel,
                                  "load_average_1min": load + [os.getloadavg()[0]]}})
for n, m in res.items():
    print(f"{n:>28}: x{m['speedup']:.3f}  {m['tokens_per_pass']:.2f} tokens/pass  agreement {m['agreement']:.3f}")
