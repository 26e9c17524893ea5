"""Cost of one SpecEE exit check on SmolLM2: full-vocabulary product vs the int8 screen.

python scripts/specee/exit_check_timing.py [--json benchmarks/specee/exit_check_timing.json] [--tokens 400]

Real normalised states of layers 18-28 from the collected training generations (``collect_data.py``)
with the draft head's top-4 candidates; both checks run interleaved on the same states (one
thread, warm-up, medians). Also records how often each outcome occurs, how many LM-head rows the
screen had to verify exactly, and that both take the same decision on every state.
"""

import argparse
import os
import statistics
import time

import torch

from foretell.core.argtypes import existing_dir, int_at_least
from foretell.core.report import write_json
from foretell.specee.collect import load_shards
from foretell.specee.engine import SpecEE
from foretell.specee.loading import cache_dir
from foretell.specee.screen import LMHeadScreen
from foretell.specee.train import _draft_inputs

ap = argparse.ArgumentParser()
ap.add_argument("--json", default="benchmarks/specee/exit_check_timing.json")
ap.add_argument("--data", type=existing_dir, default=str(cache_dir() / "collect"))
ap.add_argument("--tokens", type=int_at_least(1), default=400, help="states timed (spread over layers 18-28)")
ap.add_argument("--threads", type=int_at_least(1), default=1)
args = ap.parse_args()

torch.set_num_threads(args.threads)
ee = SpecEE.from_pretrained(None)
acc = ee.acc
items = load_shards(args.data)[1::25][:6]
cands_all = []
for it in items:
    tokens, states, pos = _draft_inputs(acc, it)
    scores, _ = ee.draft.head(tokens.view(1, -1), states.view(1, -1, states.shape[-1]), pos)
    g0 = it["prompt_len"] - 1
    gen = scores[0, g0 - 1: g0 - 1 + it["layer_h"].shape[1]]
    cands_all.append(ee.draft.head.vocab_ids[torch.topk(gen, 4, dim=-1).indices])
cands_all = torch.cat(cands_all)
states = torch.cat([acc.norm(it["layer_h"][18:29].float()).transpose(0, 1) for it in items])   # (T, 11, d)
g = torch.Generator().manual_seed(0)
pick = torch.randint(0, states.shape[0] * 11, (args.tokens,), generator=g)
xs = states.reshape(-1, states.shape[-1])[pick]
cs = cands_all.repeat_interleave(11, 0)[pick]
screen = LMHeadScreen(acc.lm_head.weight)


def full_check(x, c):
    top = acc.logits(x).argmax(-1)
    return (top.unsqueeze(-1) == c).any(-1), top


same = 0
t_full, t_screen = [], []
with torch.no_grad():
    for _ in range(3):                                   # warm-up
        full_check(xs[:1], cs[:1]), screen.argmax_among(xs[:1], cs[:1])
    for i in range(xs.shape[0]):
        x, c = xs[i: i + 1], cs[i: i + 1]
        t0 = time.perf_counter()
        ok_f, top_f = full_check(x, c)
        t1 = time.perf_counter()
        ok_s, top_s = screen.argmax_among(x, c)
        t2 = time.perf_counter()
        t_full.append(t1 - t0)
        t_screen.append(t2 - t1)
        same += int(bool(ok_f == ok_s) and (not bool(ok_f) or int(top_f) == int(top_s)))
oks = screen.argmax_among(xs, cs)[0]
report = {"states": int(xs.shape[0]), "layers": "18-28", "screen_kind": screen.kind,
          "full_product_ms": statistics.median(t_full) * 1e3, "screen_ms": statistics.median(t_screen) * 1e3,
          "speedup": statistics.median(t_full) / statistics.median(t_screen),
          "same_decision": same / xs.shape[0], "argmax_in_candidates_rate": float(oks.float().mean()),
          "exact_rows_per_check": screen.rows_checked / max(1, screen.checks),
          "threads": args.threads, "load_average": list(os.getloadavg())}
write_json(args.json, report)
print(report)
