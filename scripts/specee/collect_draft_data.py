"""Step 1b of building the shipped SpecEE assets: extra training text for the draft head.

python scripts/specee/collect_draft_data.py [--limit N] [--max-new-tokens 48] [--batch 16]

The target model's own greedy continuations of ``prompts_draft.txt`` (batched, cheap: only the
final normalised state and the target's argmax per position are kept) go to
``~/.cache/foretell/specee/draft/train``; the held-out eval prompts go to ``.../draft/eval`` and are
only used to MEASURE the draft head (never to train it). Resumable (finished shards are kept).
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
from foretell.specee.collect import collect_draft_data
from foretell.specee.loading import cache_dir, load_model, read_prompts

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=str(cache_dir() / "draft"))
ap.add_argument("--limit", type=int_at_least(0), default=0, help="use only the first N draft prompts (0 = all)")
ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
ap.add_argument("--batch", type=int_at_least(1), default=16)
ap.add_argument("--threads", type=int_at_least(1), default=1)
add_device_argument(ap)
args, device = parse_args_with_device(ap)

torch.set_num_threads(args.threads)
seed_everything(0)
t0 = time.time()
model, tok = load_model(device=device)
acc = decoder_access(model)
ev = collect_draft_data(acc, tok, read_prompts(None, "eval"), f"{args.out}/eval", max_new_tokens=args.max_new_tokens,
                        batch=args.batch)
print(f"eval: {len(ev)} sequences in {time.time() - t0:.0f} s", flush=True)
prompts = read_prompts(None, "draft")
prompts = prompts[: args.limit] if args.limit else prompts
tr = collect_draft_data(acc, tok, prompts, f"{args.out}/train", max_new_tokens=args.max_new_tokens, batch=args.batch)
n_tok = sum(int(it["ids"].numel() - it["prompt_len"]) for it in tr)
secs = time.time() - t0
print(f"train: {len(tr)} sequences, {n_tok} generated tokens; collected in {secs:.0f} s -> {args.out}", flush=True)
(Path(args.out) / "collect_info.json").write_text(json.dumps(
    {"script": "scripts/specee/collect_draft_data.py", "prompts": "prompts_draft.txt", "limit": args.limit,
     "sequences": len(tr), "generated_tokens": n_tok, "max_new_tokens": args.max_new_tokens, "batch": args.batch,
     "threads": args.threads, "last_run_seconds": round(secs, 1)}, indent=2) + "\n")
