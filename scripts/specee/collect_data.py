"""Step 1 of building the shipped SpecEE assets: collect full-model greedy trajectories.

python scripts/specee/collect_data.py [--out ~/.cache/foretell/specee/collect] [--max-new-tokens 48]
Single-threaded by default (the build machine is shared); resumable (finished shards are kept).
Each shard of 20 prompts is decoded as one batch and checked token by token against its unpadded
teacher-forced pass (see foretell.specee.collect.collect_many).
"""
import argparse
import json
import time
from pathlib import Path

import torch

from foretell.core.argtypes import int_at_least
from foretell.core.device import add_device_argument, parse_args_with_device
from foretell.core.seed import seed_everything
from foretell.specee.adapters import decoder_access
from foretell.specee.collect import collect
from foretell.specee.loading import cache_dir, load_model, read_prompts

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=str(cache_dir() / "collect"))
ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
ap.add_argument("--threads", type=int_at_least(1), default=1)
ap.add_argument("--reverse", action="store_true", help="work from the last shard (a second worker)")
add_device_argument(ap)
args, device = parse_args_with_device(ap)
torch.set_num_threads(args.threads)
seed_everything(0)
t0 = time.time()
model, tok = load_model(device=device)
collect(decoder_access(model), tok, read_prompts(None, "train"), args.out, max_new_tokens=args.max_new_tokens,
        reverse=args.reverse)
secs = time.time() - t0
print(f"collected in {secs:.0f} s -> {args.out}", flush=True)
info = Path(args.out) / "collect_info.json"
info.write_text(json.dumps({"script": "scripts/specee/collect_data.py", "prompts": "prompts_train.txt",
                            "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                            "last_run_seconds": round(secs, 1)}, indent=2) + "\n")
