"""Cost of a 1-row decode step and multi-row verify passes on SmolLM2 (float32), stock vs packed kernels.

python scripts/specee/kernel_timing.py [--json benchmarks/specee/kernel_timing.json] [--repeats 15] [--threads 1]

One model, one KV cache; the stock kernel (torch's ``F.linear``, MKL sgemm on x86) and oneDNN with
packed weights (:mod:`foretell.specee.kernels`) are switched per cell with the handle's ``enabled``
flag, so both time the same weights and the same cache. A step is the real decoding path: the
:class:`LayerStepper` pass over a 60-token cache + final norm + LM head on the new rows, then a
rollback; plus one draft-head step. Cells run interleaved in rotating order after warm-up; medians.
From these: the cost of a speculative round (gamma draft steps + a (gamma+1)-row verify) in
one-row steps of the same kernel, and against the stock one-row step.
"""

import argparse
import platform
import statistics

import torch

from foretell.core.argtypes import int_at_least
from foretell.core.report import write_json
from foretell.core.timing import time_interleaved
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import ASSETS
from foretell.specee.kernels import apply_packed_linears
from foretell.specee.kv import LayerStepper
from foretell.specee.loading import chat_ids, load_model

ap = argparse.ArgumentParser()
ap.add_argument("--json", default="benchmarks/specee/kernel_timing.json")
ap.add_argument("--repeats", type=int_at_least(1), default=15)
ap.add_argument("--rows", type=int_at_least(1), nargs="+", default=[1, 2, 3, 5, 8])
ap.add_argument("--threads", type=int_at_least(1), default=1)
args = ap.parse_args()

torch.set_num_threads(args.threads)
model, tok = load_model(None)
acc = decoder_access(model)
draft = HeadDraft(DraftHead.load(acc, ASSETS), k=4)
handle = apply_packed_linears(model, *draft.modules(), batch_hint=5)
stepper = LayerStepper(acc, "lazy")
ids = chat_ids(tok, "Explain how a refrigerator keeps food cold, step by step, for a curious child.")[0]
ids = torch.cat([ids, ids])[:60]
with torch.no_grad():
    stepper.run(ids)
    draft.feed(ids[1:], acc.norm(stepper.run(torch.tensor([ids[-1]]))[0]).expand(ids.numel() - 1, -1))
stepper.rollback(1)
gen = torch.Generator().manual_seed(0)
KERNELS = ("torch", "onednn")


@torch.no_grad()
def step(kernel, rows):
    handle.enabled = kernel == "onednn"
    if rows == "draft":
        n = draft.length()
        scores, _ = draft.feed(torch.randint(0, acc.vocab_size, (1,), generator=gen), torch.zeros(1, acc.hidden_size))
        draft.topk(scores, 4)
        draft.crop(n)
        return
    toks = torch.randint(0, acc.vocab_size, (rows,), generator=gen)
    h, _, _ = stepper.run(toks)
    acc.logits(acc.norm(h)).argmax(-1)
    stepper.rollback(rows)


cells = [(k, r) for k in KERNELS for r in args.rows + ["draft"]]
times, load = time_interleaved(cells, step, repeats=args.repeats, warmup_rounds=2)
ms = {k: {str(r): statistics.median(times[(k, r)]) * 1e3 for r in args.rows + ["draft"]} for k in KERNELS}
one_stock = ms["torch"]["1"]
report = {
    "step_ms": ms,
    "ratio_to_own_one_row": {k: {str(r): ms[k][str(r)] / ms[k]["1"] for r in args.rows} for k in KERNELS},
    "ratio_to_stock_one_row": {k: {str(r): ms[k][str(r)] / one_stock for r in args.rows} for k in KERNELS},
    "speculative_round_over_stock_step_by_gamma": {
        k: {str(r - 1): (ms[k][str(r)] + (r - 1) * ms[k]["draft"]) / one_stock for r in args.rows if r > 1}
        for k in KERNELS},
    "config": {"context_tokens": int(ids.numel()), "repeats": args.repeats, "threads": torch.get_num_threads(),
               "dtype": "float32", "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "what": "LayerStepper pass (30 layers, KV cache) + final norm + LM head + argmax, then rollback; "
                       "draft = one draft-head step (feed one token, top-4, crop)",
               "load_average_1min": load},
}
write_json(args.json, report)
for k in KERNELS:
    print(f"{k:>7}: " + " ".join(f"{r} rows {ms[k][str(r)]:.1f} ms (x{ms[k][str(r)] / one_stock:.2f})" for r in args.rows)
          + f"; draft step {ms[k]['draft']:.1f} ms")
print("round / stock step by gamma", {k: {g: round(v, 2) for g, v in d.items()}
                                       for k, d in report["speculative_round_over_stock_step_by_gamma"].items()})
print("load", load)
