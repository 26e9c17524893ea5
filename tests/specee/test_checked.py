"""Checked exits (``check_exits=True``): wrong exits are caught when their deferred layers run and
rolled back, so the output is the full model's greedy output even when most exits are wrong."""

import pytest
import torch

from tiny_models import PROMPT, AllTokensDraft, assert_cache_is_teacher_forced, hf_greedy, make_predictors, varied_model
from foretell.core.errors import ForetellError
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import SpecEE, SpecEEConfig


@pytest.fixture(scope="module")
def tiny():
    return varied_model()


def always_exiting(tiny, check: bool, layers=(1, 3)):
    """Predictors that always fire and a draft that proposes every token: exits after layer 1."""
    return SpecEE(tiny, make_predictors(tiny, layers=list(layers), bias=20.0, k=256), AllTokensDraft(256, 256),
                  SpecEEConfig(k=256, online=False, check_exits=check))


def test_checked_exits_give_full_greedy_output_despite_wrong_exits(tiny):
    n_layers = tiny.config.num_hidden_layers
    unchecked = always_exiting(tiny, check=False).generate(PROMPT, max_new_tokens=60, eos_token_id=None)
    ref = hf_greedy(tiny, 60)
    assert not torch.equal(unchecked, ref)                    # the exits alone do change the output
    ee = always_exiting(tiny, check=True)
    seen = []
    out = ee.generate(PROMPT, max_new_tokens=60, eos_token_id=None, callback=seen.append)
    assert torch.equal(out, ref)
    st = ee.last_stats
    assert st.rollbacks > 0 and min(st.layers) == 2           # exits after layer index 1 happened, some were wrong
    assert len(st.layers) > 60                                # the wasted passes are counted
    assert st.kept == 60 and st.retracted > 0
    assert seen == ref[0, PROMPT.shape[1]:].tolist()          # only checked tokens were ever handed out
    stepper = ee.stepper
    for i in range(n_layers):
        assert stepper.cache_len(i) + stepper.pending_count(i) == stepper.num_tokens == out.shape[1] - 1


def test_lazy_cache_is_exact_after_rollbacks(tiny):
    ee = always_exiting(tiny, check=True, layers=(2,))
    out = ee.generate(PROMPT, max_new_tokens=40, eos_token_id=None)
    assert ee.last_stats.rollbacks > 0
    assert_cache_is_teacher_forced(tiny, ee.stepper, out)


def test_unchecked_run_is_bounded(tiny):
    """At most ``max_unchecked`` (8) tokens wait for a check: a full pass is forced after them."""
    ee = always_exiting(tiny, check=True)
    ee.generate(PROMPT, max_new_tokens=40, eos_token_id=None)
    run = longest = 0
    for layers, emitted in zip(ee.last_stats.layers[1:], ee.last_stats.emitted[1:]):
        deep = layers == tiny.config.num_hidden_layers or not emitted     # a full pass or the final flush
        run = 0 if deep else run + 1
        longest = max(longest, run)
    assert longest == 8


def test_checked_merged_verify_is_lossless(tiny):
    acc = decoder_access(tiny)
    torch.manual_seed(0)
    head = DraftHead(acc, torch.arange(256))
    cfg = dict(k=256, gamma=3, online=False)
    preds = make_predictors(tiny, layers=[3], bias=20.0, k=256)
    plain = SpecEE(tiny, preds, HeadDraft(head, k=256), SpecEEConfig(**cfg))
    assert not torch.equal(plain.generate(PROMPT, max_new_tokens=60, eos_token_id=None,
                                          method="specee+speculative"), hf_greedy(tiny, 60))
    ee = SpecEE(tiny, preds, HeadDraft(head, k=256), SpecEEConfig(check_exits=True, **cfg))
    out = ee.generate(PROMPT, max_new_tokens=60, eos_token_id=None, method="specee+speculative")
    assert torch.equal(out, hf_greedy(tiny, 60))
    assert ee.last_stats.rollbacks > 0 and 4 in ee.last_stats.layers     # verify passes exited after layer 3
    assert ee.last_stats.kept == 60


def test_checked_exits_stop_at_a_checked_eos(tiny):
    ref = hf_greedy(tiny, 20)[0, PROMPT.shape[1]:]
    eos = int(ref[6])
    first = ref.tolist().index(eos)
    out = always_exiting(tiny, check=True).generate(PROMPT, max_new_tokens=20, eos_token_id=eos)
    assert out[0, PROMPT.shape[1]:].tolist() == ref[: first + 1].tolist()


def test_checked_exits_errors(tiny):
    with pytest.raises(ForetellError, match="check_exits needs kv_strategy='lazy'"):
        SpecEEConfig(check_exits=True, kv_strategy="fill").validate(256)
    ee = always_exiting(tiny, check=True)
    with pytest.raises(ForetellError, match="check_exits is greedy only"):
        ee.generate(PROMPT, max_new_tokens=5, do_sample=True)
