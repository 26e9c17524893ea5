"""SpecDiff on tiny random SD3 (incl. SD3.5 dual attention + qk-norm) and FLUX transformers."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from foretell.core.errors import ForetellError
from foretell.core.macs import count_macs
from foretell.specdiff import SpecDiffConfig, apply

from _method_tiny import inputs, one_thread, sample, scheduler, tiny_flux, tiny_sd3, timestep_arg

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)

MODELS = {
    "sd3": lambda: tiny_sd3(),
    "sd35_dual_qknorm": lambda: tiny_sd3(dual=True),
    "flux": lambda: tiny_flux(),
    "flux_guidance": lambda: tiny_flux(guidance_embeds=True),
}


@pytest.fixture(params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def test_cache_rate_zero_is_bit_identical_with_cfg_and_batch(model):
    s = scheduler()
    data = inputs(model, batch=2)
    ref = sample(model, s, data)
    with apply(model, SpecDiffConfig(cache_rate=0.0), scheduler=s, guidance_scale=3.0) as h:
        out = sample(model, s, data)
        assert h.stats()["macs_fraction"] == 1.0
    assert torch.equal(out, ref)


def test_full_steps_are_bit_identical_and_remove_restores(model):
    s = scheduler()
    data = inputs(model, batch=1)
    stock_forward = type(model).forward
    processors = dict(model.attn_processors)
    ref = sample(model, s, data)
    # every step in warm-up and no score recording: the SpecDiff forward itself must equal the stock one
    h_first = apply(model, SpecDiffConfig(cache_rate=0.75, warmup_steps=8, score="history"), scheduler=s, guidance_scale=3.0)
    assert torch.equal(sample(model, s, data), ref)
    with pytest.raises(ForetellError, match="already applied"):
        apply(model, SpecDiffConfig(), scheduler=s)
    h_first.remove()
    # a real handle: cached run differs, remove() restores identical outputs, processors and forward
    h = apply(model, SpecDiffConfig(cache_rate=0.75, warmup_steps=2), scheduler=s, guidance_scale=3.0)
    cached = sample(model, s, data)
    assert not torch.equal(cached, ref)
    h.remove()
    h.remove()  # idempotent
    assert "forward" not in model.__dict__ and not hasattr(model, "_diffusers_hook")
    assert type(model).forward is stock_forward
    assert all(model.attn_processors[name] is proc for name, proc in processors.items())
    assert torch.equal(sample(model, s, data), ref)


def test_two_runs_in_a_row_equal_two_fresh_runs(model):
    s = scheduler()
    cfg = SpecDiffConfig(cache_rate=0.75, warmup_steps=2, refresh_every=3)
    a, b = inputs(model, batch=2, seed=1), inputs(model, batch=2, seed=2)
    with apply(model, cfg, scheduler=s, guidance_scale=3.0):
        run_a, run_b = sample(model, s, a), sample(model, s, b)
    with apply(model, cfg, scheduler=s, guidance_scale=3.0):
        fresh_b = sample(model, s, b)
    with apply(model, cfg, scheduler=s, guidance_scale=3.0):
        fresh_a = sample(model, s, a)
    assert torch.equal(run_a, fresh_a) and torch.equal(run_b, fresh_b)


def test_stats_levels_and_macs_drop(model):
    s = scheduler()
    data = inputs(model, batch=1)
    with sdpa_kernel(SDPBackend.MATH):  # CPU SDPA kernels are invisible to FlopCounterMode otherwise
        full_macs, ref = count_macs(lambda: sample(model, s, data))
        with apply(model, SpecDiffConfig(cache_rate=0.75, warmup_steps=2, refresh_every=4), scheduler=s,
                   guidance_scale=3.0) as h:
            macs, out = count_macs(lambda: sample(model, s, data))
            st = h.stats()
    assert macs < 0.75 * full_macs
    assert st["macs_fraction"] == pytest.approx(macs / full_macs, rel=0.01)
    assert st["full_macs"] == full_macs
    assert json.loads(json.dumps(st)) == st  # stats are plain JSON
    inner = model.config.attention_head_dim * model.config.num_attention_heads
    rows = [64 + (0 if name.endswith("attn2.processor") else 5) for name in model.attn_processors]  # image + text keys
    kv = sum(2 * 2 * r * inner * 4 for r in rows)  # keys and values, 2 CFG rows, fp32
    feat = model.config.patch_size**2 * model.out_channels
    assert st["cache_bytes"] == kv + 3 * 2 * 64 * feat * 4 + 3 * 64 * 8  # + feature history and its sigmas
    assert st["speculative_calls"] == 1 and 0 < st["speculative_macs_fraction"] < 0.5
    steps = st["per_step"]
    assert [p["full"] for p in steps] == [True, True, False, False, False, False, True, False]
    for p in steps:
        assert sum(p["level_counts"].values()) == 64
        assert p["level_counts"]["C1"] == (64 if p["full"] else 16)
    assert st["computed_token_fraction"] == pytest.approx((3 * 64 + 5 * 16) / (8 * 64))
    assert any(p["level_counts"]["C2"] > 0 for p in steps) and any(p["level_counts"]["C3"] > 0 for p in steps)
    err = (out - ref).pow(2).mean() / ref.pow(2).mean()
    assert 0 < err < 0.05


@torch.no_grad()
def test_partial_step_is_exact_when_the_cache_is_exact(model):
    """With a timestep-independent model and an unchanged input, cached K/V and features are exact,
    so a cached step (gather, per-layer K/V cache, RoPE gather, levels) must reproduce the full output."""
    emb = model.time_text_embed.timestep_embedder.linear_1
    emb.weight.zero_()
    emb.bias.zero_()
    s = scheduler()
    data = inputs(model, batch=2)
    s.set_timesteps(4)
    x = torch.cat([data["x"]] * 2)
    ts = [timestep_arg(model, t, x.shape[0]) for t in s.timesteps]
    ref = model(hidden_states=x, timestep=ts[1], return_dict=False, **data["cond"])[0]
    with apply(model, SpecDiffConfig(cache_rate=0.75, warmup_steps=1), scheduler=s, guidance_scale=3.0) as h:
        for t in ts:
            out = model(hidden_states=x, timestep=t, return_dict=False, **data["cond"])[0]
            assert torch.allclose(out, ref, atol=2e-5), float((out - ref).abs().max())
        assert [p["full"] for p in h.stats()["per_step"]] == [True, False, False, False]


def test_errors_unsupported_model_and_missing_scheduler():
    with pytest.raises(ForetellError, match="unsupported model Linear; supported: SD3Transformer2DModel"):
        apply(torch.nn.Linear(2, 2), SpecDiffConfig())
    with pytest.raises(ForetellError, match="scheduler"):
        apply(tiny_sd3(), SpecDiffConfig())


def test_conditional_only_speculation_halves_its_cost(model):
    s = scheduler()
    data = inputs(model, batch=1)
    results = {}
    for both in (True, False):
        cfg = SpecDiffConfig(cache_rate=0.75, warmup_steps=2, speculative_steps=3, speculative_uncond=both)
        with apply(model, cfg, scheduler=s, guidance_scale=3.0) as h:
            out = sample(model, s, data)
            st = h.stats()
        results[both] = (st["speculative_calls"], st["speculative_macs_fraction"] * st["macs"], out)
    assert results[True][0] == results[False][0] == 2
    assert results[False][1] == pytest.approx(results[True][1] / 2, rel=1e-9)
    assert not torch.equal(results[True][2], results[False][2])  # different speculative scores, different run


@pytest.mark.parametrize("score, recorded_calls, spec_calls", [("product", 8, 1), ("history", 6, 0), ("future", 2, 1)])
def test_scores_are_computed_only_where_needed(monkeypatch, score, recorded_calls, spec_calls):
    """8 steps, 2 warm-up: his is needed at steps 1..6 (before a cached step), fut at step 0 and the
    speculative step; every other attention call must take the stock SDPA path."""
    import foretell.specdiff.attention as attention

    calls = []
    real = attention.attention_with_received

    def counting(q, k, v):
        calls.append(q.shape)
        return real(q, k, v)

    monkeypatch.setattr(attention, "attention_with_received", counting)
    model = tiny_sd3()
    s = scheduler()
    with apply(model, SpecDiffConfig(cache_rate=0.75, warmup_steps=2, score=score), scheduler=s, guidance_scale=3.0) as h:
        sample(model, s, inputs(model))
        assert h.stats()["speculative_calls"] == spec_calls
    assert len(calls) == recorded_calls * len(model.attn_processors)
