"""Do the shipped (float32-calibrated) exit thresholds keep >= 0.97 agreement in another dtype?

python scripts/specee/check_dtype_thresholds.py --dtype bfloat16 [--prompts 20]
    [--json benchmarks/specee/threshold_check_bfloat16.json]

The same calibration prompts as ``calibrate_thresholds.py`` (the held-out 20% of the training
prompts, first ``--prompts``), decoded greedily with SpecEE in ``--dtype`` and compared with the
full model's greedy output IN THAT DTYPE (generated here with ``method="full"``), so that only the
exits are measured, not the dtype's own rounding. Also reports how far that dtype's full greedy
output is from the stored float32 continuations.
"""

import argparse
import os
import time
from pathlib import Path

import torch

from foretell.core.argtypes import existing_dir, int_at_least
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.report import write_json
from foretell.core.seed import seed_everything
from foretell.specee.calibrate import end_to_end_agreement
from foretell.specee.collect import load_shards
from foretell.specee.engine import SpecEE
from foretell.specee.loading import cache_dir
from foretell.specee.train import held_out_prompts

ap = argparse.ArgumentParser()
ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
ap.add_argument("--assets", type=existing_dir, default=str(Path(__file__).resolve().parents[2] / "src/foretell/specee/assets"))
ap.add_argument("--data", type=existing_dir, default=str(cache_dir() / "collect"))
ap.add_argument("--prompts", type=int_at_least(1), default=20)
ap.add_argument("--threads", type=int_at_least(1), default=1)
ap.add_argument("--json", default=None, help="default: benchmarks/specee/threshold_check_<dtype>.json")
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(args.threads)
seed_everything(0)
t0, cpu0, load = time.time(), time.process_time(), [os.getloadavg()[0]]
ee = SpecEE.from_pretrained(None, predictors=args.assets, torch_dtype=args.dtype, device=device)
items = load_shards(args.data)
cal = [items[i] for i in held_out_prompts(len(items))][: args.prompts]
refs = []
for it in cal:
    n = int(it["prompt_len"])
    m = int(it["ids"].numel()) - n
    refs.append(ee.generate(it["ids"][:n].long().view(1, -1), max_new_tokens=m, method="full")[0, n:].tolist())
stored = [it["ids"][int(it["prompt_len"]):].tolist() for it in cal]
same = sum(sum(a == b for a, b in zip(r, s)) for r, s in zip(refs, stored))
full_vs_fp32 = same / max(1, sum(len(s) for s in stored))
ee.config.threshold = None
specee = end_to_end_agreement(ee, cal, refs=refs, desc=f"specee {args.dtype}")
load.append(os.getloadavg()[0])
report = {"dtype": args.dtype, "prompts": len(cal), "thresholds": "calibrated (float32, predictors.json)",
          "specee_vs_full_same_dtype": specee, "met_0.97": specee["agreement"] >= 0.97,
          "full_same_dtype_vs_stored_float32": full_vs_fp32,
          "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
          "load_average_1min": load, "threads": args.threads, "device": str(device)}
write_json(args.json or f"benchmarks/specee/threshold_check_{args.dtype}.json", report)
print(report)
