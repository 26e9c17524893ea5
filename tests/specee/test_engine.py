"""Exits, KV-cache bookkeeping, speculative decoding and generate semantics on tiny random models."""

import pytest
import torch

from tiny_models import PROMPT, AllTokensDraft, assert_cache_is_teacher_forced, hf_greedy, make_predictors, tiny_model
from foretell.specee.adapters import all_layer_states, decoder_access
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import SpecEE, SpecEEConfig


@pytest.mark.parametrize("kv", ["lazy", "fill"])
def test_threshold_one_equals_full_greedy(tiny, kv):
    # predictors that would always fire (sigmoid(30) rounds to 1.0): threshold 1.0 must still never exit
    ee = SpecEE(tiny, make_predictors(tiny, bias=30.0, k=256), AllTokensDraft(256, 256),
                SpecEEConfig(k=256, threshold=1.0, kv_strategy=kv))
    out = ee.generate(PROMPT, max_new_tokens=30, eos_token_id=None)
    assert torch.equal(out, hf_greedy(tiny, 30))
    assert ee.last_stats.avg_layers == tiny.config.num_hidden_layers
    # the same predictors at 0.5 do exit, and then the output is not forced to match
    ee.config.threshold = 0.5
    ee.generate(PROMPT, max_new_tokens=30, eos_token_id=None)
    assert ee.last_stats.avg_layers < tiny.config.num_hidden_layers


@pytest.mark.parametrize("kv", ["lazy", "fill"])
def test_kv_lengths_consistent_over_many_exits(tiny, kv):
    n_layers = tiny.config.num_hidden_layers
    ee = SpecEE(tiny, make_predictors(tiny, layers=[1, 3], bias=20.0, k=256), AllTokensDraft(256, 256),
                SpecEEConfig(k=256, kv_strategy=kv, online=False))
    out = ee.generate(PROMPT, max_new_tokens=120, eos_token_id=None)
    st = ee.stepper
    assert out.shape[1] == PROMPT.shape[1] + 120
    exits = [layers for layers in ee.last_stats.layers if layers < n_layers]
    assert len(exits) >= 100 and set(exits) == {2}          # exit after layer index 1 (2 layers used)
    processed = out.shape[1] - 1                              # the last emitted token is not processed yet
    assert st.num_tokens == processed
    for i in range(n_layers):
        assert st.cache_len(i) + st.pending_count(i) == processed
    if kv == "lazy":
        assert st.pending_count(n_layers - 1) > 0             # exited tokens still owe their upper layers
    else:
        assert st.pending_count(n_layers - 1) == 0
    st.flush()
    for i in range(n_layers):
        lay = st.cache.layers[i]
        assert lay.keys.shape[-2] == lay.values.shape[-2] == processed


def test_lazy_kv_equals_full_recompute(tiny):
    """Lazy KV is exact: after flush, every layer's keys equal a full teacher-forced pass."""
    ee = SpecEE(tiny, make_predictors(tiny, layers=[2], bias=20.0, k=256), AllTokensDraft(256, 256),
                SpecEEConfig(k=256, kv_strategy="lazy", online=False))
    out = ee.generate(PROMPT, max_new_tokens=40, eos_token_id=None)
    ee.stepper.flush()
    from transformers import DynamicCache

    cache = DynamicCache()
    tiny(out[:, :-1], cache=cache, use_cache=True)
    for i in range(tiny.config.num_hidden_layers):
        torch.testing.assert_close(ee.stepper.cache.layers[i].keys, cache.layers[i].keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ee.stepper.cache.layers[i].values, cache.layers[i].values, atol=1e-4, rtol=1e-4)


def test_fill_strategy_writes_exit_state_kv(tiny):
    """Fill: skipped layers' keys come from the exit layer's state, so they differ from a full pass."""
    ee = SpecEE(tiny, make_predictors(tiny, layers=[1], bias=20.0, k=256), AllTokensDraft(256, 256),
                SpecEEConfig(k=256, kv_strategy="fill", online=False))
    out = ee.generate(PROMPT, max_new_tokens=10, eos_token_id=None)
    from transformers import DynamicCache

    cache = DynamicCache()
    tiny(out[:, :-1], cache=cache, use_cache=True)
    n = PROMPT.shape[1]
    last = tiny.config.num_hidden_layers - 1
    torch.testing.assert_close(ee.stepper.cache.layers[0].keys, cache.layers[0].keys, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ee.stepper.cache.layers[last].keys[..., n + 1:, :], cache.layers[last].keys[..., n + 1:, :])


@pytest.mark.parametrize("kv", ["lazy", "fill"])
def test_speculative_is_lossless_and_merged_keeps_cache_consistent(tiny, kv):
    acc = decoder_access(tiny)
    torch.manual_seed(0)
    head = DraftHead(acc, torch.arange(256))
    ee = SpecEE(tiny, make_predictors(tiny, layers=[3], bias=20.0, k=256), HeadDraft(head, k=256),
                SpecEEConfig(k=256, kv_strategy=kv, gamma=3, online=False))
    out = ee.generate(PROMPT, max_new_tokens=40, eos_token_id=None, method="speculative")
    assert torch.equal(out, hf_greedy(tiny, 40))
    assert sum(ee.last_stats.emitted) == 40
    out = ee.generate(PROMPT, max_new_tokens=60, eos_token_id=None, method="specee+speculative")
    assert out.shape[1] == PROMPT.shape[1] + 60
    assert min(ee.last_stats.layers[1:]) == 4                # verify passes exited after layer index 3
    st = ee.stepper
    for i in range(tiny.config.num_hidden_layers):
        assert st.cache_len(i) + st.pending_count(i) == st.num_tokens
    assert ee.draft.length() <= st.num_tokens
    if kv == "lazy":                                         # the default draft tree (2,) with exits: K/V exact
        assert_cache_is_teacher_forced(tiny, st, out)


def test_sampling_semantics_and_callback(tiny):
    ee = SpecEE(tiny, make_predictors(tiny, bias=-30.0, k=4), AllTokensDraft(256, 4), SpecEEConfig(k=4))
    seen = []
    g = torch.Generator().manual_seed(0)
    greedy_like = ee.generate(PROMPT, max_new_tokens=12, do_sample=True, top_k=1, eos_token_id=None,
                              callback=seen.append, generator=g)
    assert torch.equal(greedy_like, hf_greedy(tiny, 12))
    assert seen == greedy_like[0, PROMPT.shape[1]:].tolist()
    a = ee.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=2.0,
                    eos_token_id=None, generator=torch.Generator().manual_seed(1))
    b = ee.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=2.0,
                    eos_token_id=None, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, hf_greedy(tiny, 12))
    full = hf_greedy(tiny, 12)[0, PROMPT.shape[1]:]
    eos = int(full[4])
    out = ee.generate(PROMPT, max_new_tokens=12, eos_token_id=eos)
    assert out[0, -1] == eos and out.shape[1] <= PROMPT.shape[1] + 5


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_other_architectures_go_through_the_adapter(kind):
    model = tiny_model(kind, layers=4)
    acc = decoder_access(model)
    ids = PROMPT
    ref = model(ids).logits[0, -1]
    states = all_layer_states(acc, ids[0])
    torch.testing.assert_close(acc.logits(acc.norm(states[-1, -1])), ref, atol=1e-4, rtol=1e-4)
    ee = SpecEE(model, make_predictors(model, layers=[1], bias=20.0, k=256), AllTokensDraft(256, 256),
                SpecEEConfig(k=256, threshold=1.0))
    out = ee.generate(ids, max_new_tokens=8, eos_token_id=None)
    assert torch.equal(out, model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0))
    ee.config.threshold = 0.5
    ee.generate(ids, max_new_tokens=8, eos_token_id=None)
    assert ee.last_stats.avg_layers < 4
