"""Cost of a 1-row decode step and a multi-row verify pass on SmolLM2, float32 vs bfloat16.

python scripts/specee/dtype_timing.py [--json benchmarks/specee/dtype_timing.json] [--repeats 15]

Both models are the same weights, loaded by ``load_model(None, dtype)`` as
``SpecEE.from_pretrained(..., torch_dtype=...)`` does (transformers' bf16 loading: RMSNorm upcast,
float32 rotary table, softmax as transformers computes it). A step is the real decoding path: the
:class:`LayerStepper` pass over a 60-token cache + final norm + LM head on the new rows, then a
rollback. Also one draft-head step (feed one token, top-4, crop) in each dtype, and from these the
cost of a speculative round (gamma draft steps + a gamma+1-row verify) in full steps: speculation
pays when it accepts more tokens per round than that. All cells are measured interleaved in
rotating order after warm-up; medians.
"""

import argparse
import statistics

import torch

from foretell.core.argtypes import int_at_least
from foretell.core.report import write_json
from foretell.core.timing import time_interleaved
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import ASSETS
from foretell.specee.kv import LayerStepper
from foretell.specee.loading import chat_ids, load_model

ap = argparse.ArgumentParser()
ap.add_argument("--json", default="benchmarks/specee/dtype_timing.json")
ap.add_argument("--repeats", type=int_at_least(1), default=15)
ap.add_argument("--rows", type=int_at_least(1), nargs="+", default=[1, 2, 3, 5])
ap.add_argument("--threads", type=int_at_least(1), default=1)
args = ap.parse_args()

torch.set_num_threads(args.threads)
model, tok = load_model(None)
models = {"float32": model, "bfloat16": load_model(None, torch.bfloat16)[0]}
ids = chat_ids(tok, "Explain how a refrigerator keeps food cold, step by step, for a curious child.")[0]
ids = torch.cat([ids, ids])[:60]
steppers = {}
for name, m in models.items():
    acc = decoder_access(m)
    st = LayerStepper(acc, "lazy")
    with torch.no_grad():
        st.run(ids)
    steppers[name] = (acc, st)

drafts = {}
for name, m in models.items():
    acc = steppers[name][0]
    d = HeadDraft(DraftHead.load(acc, ASSETS), k=4)
    with torch.no_grad():
        d.feed(ids[1:], acc.norm(steppers[name][1].run(torch.tensor([ids[-1]]))[0]).expand(ids.numel() - 1, -1))
    steppers[name][1].rollback(1)
    drafts[name] = d
gen = torch.Generator().manual_seed(0)


def step(name, rows):
    if rows == "draft":
        return draft_step(name, rows)
    acc, st = steppers[name]
    toks = torch.randint(0, acc.vocab_size, (rows,), generator=gen)
    with torch.no_grad():
        h, _, _ = st.run(toks)
        acc.logits(acc.norm(h)).argmax(-1)
    st.rollback(rows)


def draft_step(name, _):
    d = drafts[name]
    acc = steppers[name][0]
    n = d.length()
    with torch.no_grad():
        scores, g = d.feed(torch.randint(0, acc.vocab_size, (1,), generator=gen), torch.zeros(1, acc.hidden_size, dtype=acc.dtype))
        d.topk(scores, 4)
    d.crop(n)


cells = [(n, r) for n in models for r in args.rows] + [(n, "draft") for n in models]
times, load = time_interleaved(cells, step, repeats=args.repeats, warmup_rounds=3)
res = {n: {str(r): statistics.median(times[(n, r)]) * 1e3 for r in args.rows} for n in models}
ratios = {n: {str(r): res[n][str(r)] / res[n]["1"] for r in args.rows} for n in models}
draft_ms = {n: statistics.median(times[(n, "draft")]) * 1e3 for n in models}
# a speculative round of gamma draft steps + one (gamma+1)-row verify, in units of one full step
round_cost = {n: {str(r - 1): (res[n][str(r)] + (r - 1) * draft_ms[n]) / res[n]["1"] for r in args.rows if r > 1}
              for n in models}
report = {"step_ms": res, "ratio_to_one_row": ratios, "draft_step_ms": draft_ms,
          "speculative_round_over_full_step_by_gamma": round_cost,
          "bf16_speedup_one_row": res["float32"]["1"] / res["bfloat16"]["1"],
          "config": {"context_tokens": int(ids.numel()), "repeats": args.repeats, "threads": torch.get_num_threads(),
                     "what": "LayerStepper pass (30 layers, KV cache) + final norm + LM head + argmax, then rollback",
                     "load_average_1min": load}}
write_json(args.json, report)
for n in models:
    print(n, " ".join(f"{r} rows {res[n][str(r)]:.1f} ms (x{ratios[n][str(r)]:.2f})" for r in args.rows),
          f"draft step {draft_ms[n]:.1f} ms; round/full step by gamma", {g: round(v, 2) for g, v in round_cost[n].items()})
print("load", load)
