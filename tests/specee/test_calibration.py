"""Calibrated per-layer exit thresholds: the choice rule, storage in the predictors' JSON, defaults."""

import json

import pytest
import torch

from tiny_models import AllTokensDraft, make_predictors
from foretell.specee.calibrate import DISABLED, calibrate_thresholds, precision_threshold
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.predictor import PAPER_THRESHOLD, LayerPredictors

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])


def _precision_above(scores, correct, t):
    fire = scores > t
    return float(correct[fire].float().mean()) if fire.any() else None


def _brute_force(scores, correct, target, min_fires):
    """Reference: try every cut between distinct scores, lowest threshold first."""
    s = sorted(set(scores.tolist()))
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(s, s[1:])]
    for t in cuts:
        fire = scores > t
        if int(fire.sum()) >= min_fires and float(correct[fire].float().mean()) >= target - 1e-12:
            return t
    return DISABLED


def test_precision_threshold_on_a_known_precision_curve():
    # 1000 distinct scores; the top 400 are all right, below that every second one is right:
    # including x rows of the lower band gives precision (400 + ceil(x/2)) / (400 + x)
    scores = torch.arange(1000, dtype=torch.float32) / 1000
    correct = (torch.arange(1000) >= 600) | (torch.arange(1000) % 2 == 1)
    t = precision_threshold(scores, correct, 0.9, min_fires=1)
    fire = scores > t
    # largest x with (400 + ceil(x/2)) / (400 + x) >= 0.9 is x = 101 (ends on a right row)
    assert int(fire.sum()) == 501
    assert _precision_above(scores, correct, t) >= 0.9
    # minimal: letting the next lower score in drops below the target
    lower = float(scores[~fire].max())
    assert _precision_above(scores, correct, lower - 1e-4) < 0.9
    assert t == pytest.approx(_brute_force(scores, correct, 0.9, 1))
    # precision 1.0: the 400-row band plus row 599 (odd, right), halfway below it; everything
    # right: 0.0; nothing right: disabled
    assert precision_threshold(scores, correct, 1.0, min_fires=1) == pytest.approx(0.5985)
    assert precision_threshold(scores, torch.ones(1000, dtype=torch.bool), 0.99) == 0.0
    assert precision_threshold(scores, torch.zeros(1000, dtype=torch.bool), 0.5) == DISABLED


def test_precision_threshold_matches_brute_force_with_ties_and_min_fires():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        scores = torch.randint(0, 40, (300,), generator=g).float() / 40          # many ties
        correct = torch.rand(300, generator=g) < scores ** 0.5                   # higher score, more often right
        for target, min_fires in ((0.8, 1), (0.9, 20), (0.97, 5)):
            got = precision_threshold(scores, correct, target, min_fires)
            assert got == pytest.approx(_brute_force(scores, correct, target, min_fires)), (trial, target)
            if got < DISABLED:
                assert int((scores > got).sum()) >= min_fires


def test_calibrate_thresholds_only_counts_rows_that_would_exit(tiny):
    preds = make_predictors(tiny, layers=[1, 2])
    n = 400
    feats = torch.randn(6, n, 12)
    labels = torch.zeros(6, n)
    fires = torch.zeros(6, n, dtype=torch.bool)
    s1 = preds.score(1, feats[1])
    labels[1] = (s1 > s1.median()).float()       # layer 1: the upper half of its scores is right
    fires[1] = True
    fires[2, :10] = True                         # layer 2: only 10 rows pass the candidate check
    labels[2, :10] = 1.0
    mask = torch.ones(n, dtype=torch.bool)
    thr = calibrate_thresholds(preds, feats, labels, fires, mask, 0.999, min_fires=20)
    assert _precision_above(s1, labels[1] > 0.5, thr[1]) == 1.0
    assert int((s1 > thr[1]).sum()) == n // 2                  # lowest threshold: the whole right half
    assert thr[2] == DISABLED                                  # 10 exits < min_fires
    thr_all = calibrate_thresholds(preds, feats, labels, None, mask, 0.999, min_fires=20)
    assert thr_all[2] == DISABLED                              # without the check: 10 right of 400


def test_thresholds_round_trip_and_old_configs_still_load(tmp_path, tiny):
    preds = make_predictors(tiny, layers=[0, 2, 3])
    preds.set_thresholds({0: 1.0, 2: 0.93, 3: 0.71}, {"target_precision": 0.99})
    preds.save(tmp_path)
    back = LayerPredictors.load(tmp_path)
    assert [back.threshold(l) for l in (0, 2, 3)] == [1.0, 0.93, 0.71]
    assert back.config.calibration == {"target_precision": 0.99}
    assert back.threshold(2, override=0.5) == 0.5
    # a config written before thresholds existed: no keys -> the paper's 0.5 on every layer
    cfg = json.loads((tmp_path / "predictors.json").read_text())
    del cfg["thresholds"], cfg["calibration"]
    (tmp_path / "predictors.json").write_text(json.dumps(cfg))
    old = LayerPredictors.load(tmp_path)
    assert old.threshold(2) == PAPER_THRESHOLD == 0.5


def test_calibrated_thresholds_are_the_default_and_an_explicit_threshold_overrides(tiny):
    n_layers = tiny.config.num_hidden_layers
    preds = make_predictors(tiny, bias=30.0, k=256)             # would always fire at any threshold < 1
    preds.set_thresholds({l: 1.0 for l in preds.config.layers})  # calibration disabled every layer
    ee = SpecEE(tiny, preds, AllTokensDraft(256, 256), SpecEEConfig(k=256))
    assert ee.config.threshold is None
    ref = tiny.generate(PROMPT, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=12, eos_token_id=None), ref)
    assert ee.last_stats.evaluations == 0                         # disabled layers are not even evaluated
    ee.config.threshold = 0.5                                     # the paper's threshold is still reachable
    ee.generate(PROMPT, max_new_tokens=12, eos_token_id=None)
    assert ee.last_stats.avg_layers < n_layers
    preds.set_thresholds({l: (0.5 if l == 3 else 1.0) for l in preds.config.layers})
    ee.config.threshold = None                                    # only layer 3 may exit now
    ee.generate(PROMPT, max_new_tokens=12, eos_token_id=None)
    assert set(ee.last_stats.layers[1:]) == {4}


def test_end_to_end_agreement_against_stored_trajectories(tiny):
    from foretell.specee.adapters import decoder_access
    from foretell.specee.calibrate import end_to_end_agreement
    from foretell.specee.collect import collect_one

    acc = decoder_access(tiny)
    items = [collect_one(acc, PROMPT, 12, None), collect_one(acc, PROMPT[:, :4], 12, None)]
    preds = make_predictors(tiny, layers=[0], bias=30.0, k=256)
    ee = SpecEE(tiny, preds, AllTokensDraft(256, 256), SpecEEConfig(k=256, online=False))
    preds.set_thresholds({0: 1.0})
    r = end_to_end_agreement(ee, items)
    assert r["agreement"] == 1.0 and r["first_divergence"] == 12 and r["avg_layers"] == 6 and r["tokens"] == 24
    preds.set_thresholds({0: 0.5})                      # every token exits after layer 0
    r = end_to_end_agreement(ee, items)
    assert r["avg_layers"] == 1
    ref = [it["ids"][it["prompt_len"]:].tolist() for it in items]
    outs = [ee.generate(it["ids"][:it["prompt_len"]].view(1, -1).long(), max_new_tokens=12)[0, it["prompt_len"]:].tolist()
            for it in items]
    same = sum(a == b for o, rf in zip(outs, ref) for a, b in zip(o, rf))
    assert r["agreement"] == same / 24
