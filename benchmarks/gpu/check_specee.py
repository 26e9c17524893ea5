"""GPU check of specee: see benchmarks/gpu/run_all.py."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import common


def run(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "specee"))
    from conftest import make_predictors, tiny_model

    from foretell.specee.adapters import decoder_access
    from foretell.specee.draft import DraftHead, HeadDraft
    from foretell.specee.engine import SpecEE, SpecEEConfig

    res = {}
    model = tiny_model(layers=8).to(common.DEV)
    ids = torch.tensor([[1, 5, 9, 33, 70, 2, 8]], device=common.DEV)
    ref = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    head = DraftHead(decoder_access(model), torch.arange(256)).to(common.DEV)
    preds = make_predictors(model, bias=30.0, k=256).to(common.DEV)
    ee = SpecEE(model, preds, HeadDraft(head, k=256), SpecEEConfig(k=256, threshold=1.0))
    out = ee.generate(ids, max_new_tokens=40, eos_token_id=None)
    res["threshold1_equal"] = bool(torch.equal(out.cpu(), ref.cpu()))
    out = ee.generate(ids, max_new_tokens=40, eos_token_id=None, method="speculative")
    res["speculative_equal"] = bool(torch.equal(out.cpu(), ref.cpu()))
    ee.config.threshold = 0.5
    out = ee.generate(ids, max_new_tokens=40, eos_token_id=None)
    res["exit_avg_layers"] = ee.last_stats.avg_layers
    out = ee.generate(ids, max_new_tokens=40, eos_token_id=None, method="specee+speculative")
    res["merged_tokens"] = int(out.shape[1] - ids.shape[1])
    res["ok"] = res["threshold1_equal"] and res["speculative_equal"] and res["merged_tokens"] == 40
    return res
