"""One slower test on the real embedded SmolLM2-135M-Instruct with the shipped assets."""

import pytest
import torch

from foretell.specee.engine import ASSETS, SpecEE

pytestmark = pytest.mark.slow


def test_smollm2_with_shipped_assets():
    pytest.importorskip("gguf")
    from foretell.specee.loading import chat_ids

    ee = SpecEE.from_pretrained(None, threshold=1.0)
    assert ee.acc.num_layers == 30 and ee.acc.hidden_size == 576
    assert (ASSETS / "predictors.json").is_file() and (ASSETS / "draft_head.safetensors").is_file()
    ids = chat_ids(ee.tokenizer, "What is the capital of France?")
    ref = ee.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(ee.generate(ids, max_new_tokens=8), ref)           # threshold 1.0 == full greedy
    # the shipped predictors carry calibrated per-layer thresholds, used when threshold is None
    thr = ee.predictors.config.thresholds
    assert len(thr) == 29 and all(0.0 <= t <= 1.0 for t in thr.values()) and min(thr.values()) < 1.0
    ee.config.threshold = None
    assert ee.rule().thresholds[28] == thr["28"]
    out = ee.generate(ids, max_new_tokens=8)
    assert out.shape[1] <= ids.shape[1] + 8 and ee.last_stats.evaluations > 0
    ee.config.threshold = 0.5
    out = ee.generate(ids, max_new_tokens=8, method="specee+speculative")
    assert out.shape[1] <= ids.shape[1] + 8 and ee.last_stats.avg_layers <= 30
    st = ee.stepper
    assert all(st.cache_len(i) + st.pending_count(i) == st.num_tokens for i in range(30))
