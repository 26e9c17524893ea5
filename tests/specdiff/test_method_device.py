"""Device- and dtype-facing parts of SpecDiff that a CPU can check: half-precision timesteps and
models, and the GPU code paths (no host syncs, half-precision scoring) against the CPU ones."""

import pytest
import torch

from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.attention import attention_with_received, score_dtype
from foretell.specdiff.history import FeatureHistory
from foretell.specdiff.levels import C1, assign_levels, num_computed, select_levels

from _method_tiny import inputs, one_thread, scheduler, tiny_flux, tiny_sd3

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)


@torch.no_grad()
def _flux_loop(model, sched, data, steps=6, timestep_dtype=torch.float32):
    """FluxPipeline's loop: no CFG, ``timestep = t.expand(B).to(latents.dtype) / 1000``."""
    x = data["x"].to(model.dtype)
    cond = {k: (v.to(model.dtype) if k in ("encoder_hidden_states", "pooled_projections") else v)
            for k, v in data["cond"].items()}
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        ts = t.expand(x.shape[0]).to(timestep_dtype) / 1000
        v = model(hidden_states=x, timestep=ts, return_dict=False, **cond)[0]
        x = sched.step(v, t, x).prev_sample
    return x


def test_bfloat16_timestep_is_placed_on_the_schedule():
    # FluxPipeline casts the timestep to the latents' dtype; in bfloat16 it is off the float32
    # schedule by up to eps/2 -- it must still be located, not sent to the stock forward
    model = tiny_flux(guidance_embeds=True)
    data = inputs(model, batch=1, cfg=False)
    s = scheduler()
    with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2), scheduler=s) as h:
        _flux_loop(model, s, data, timestep_dtype=torch.bfloat16)
        st = h.stats()
    assert st["stock_calls"] == 0 and st["stock_reasons"] == {}
    assert st["computed_token_fraction"] < 1.0 and len(st["per_step"]) == 6


@pytest.mark.parametrize("make", [tiny_sd3, tiny_flux], ids=["sd3", "flux"])
def test_bfloat16_model_runs_with_bfloat16_caches(make):
    model = make().to(torch.bfloat16)
    data = inputs(model, batch=1, cfg=False)
    s = scheduler()
    if make is tiny_flux:
        with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2), scheduler=s) as h:
            out = _flux_loop(model, s, data, timestep_dtype=torch.bfloat16)
            hook = h._hook
            assert hook.run.history.features.dtype == torch.bfloat16
            assert all(p.k_cache.dtype == torch.bfloat16 for p in hook.processors)
            st = h.stats()
    else:
        with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2), scheduler=s, guidance_scale=3.0) as h:
            s.set_timesteps(6)
            x = data["x"].to(torch.bfloat16)
            cond = {k: v.to(torch.bfloat16) for k, v in inputs(model, batch=1)["cond"].items()}
            with torch.no_grad():
                for t in s.timesteps:
                    v = model(hidden_states=torch.cat([x, x]), timestep=t.expand(2), return_dict=False, **cond)[0]
                    v_u, v_c = v.chunk(2)
                    x = s.step(v_u + 3.0 * (v_c - v_u), t, x).prev_sample
            out = x
            assert h._hook.run.history.features.dtype == torch.bfloat16
            st = h.stats()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert st["stock_calls"] == 0 and st["computed_token_fraction"] < 1.0


@pytest.mark.parametrize("reuse_mass, reuse, blend", [(0.1, True, True), (0.3, False, True), (0.1, True, False), (0.0, True, True)])
def test_select_levels_matches_boolean_selection(reuse_mass, reuse, blend):
    gen = torch.Generator().manual_seed(1)
    for n in (7, 64, 257):
        scores = torch.rand(n, generator=gen, dtype=torch.float64)
        scores[: n // 3] = scores[0]  # ties
        k = num_computed(n, 0.75)
        levels, idx = select_levels(scores, k, reuse_mass, reuse=reuse, blend=blend)
        assert torch.equal(levels, assign_levels(scores, k, reuse_mass, reuse=reuse, blend=blend))
        assert torch.equal(idx, (levels == C1).nonzero().flatten())  # ascending, exactly the C1 tokens
        # the boolean-indexing formulation the scatter replaced
        ref = torch.full((n,), 2, dtype=torch.long)
        if reuse_mass > 0:
            asc = torch.argsort(scores, stable=True)
            mass = torch.cumsum(scores[asc], 0)
            ref[asc[mass <= reuse_mass * mass[-1]]] = 1
        if not blend:
            ref[:] = 1
        elif not reuse:
            ref[:] = 2
        ref[torch.argsort(scores, descending=True, stable=True)[:k]] = 0
        assert torch.equal(levels, ref)


def test_blend_without_selection_matches_selected_blend():
    gen = torch.Generator().manual_seed(2)
    hist = FeatureHistory(3)
    n = 40
    for sigma in (1.0, 0.9, 0.8):
        hist.update(torch.randn(2, n, 6, generator=gen), None, sigma)
    idx = torch.arange(0, n, 5)
    hist.update(torch.randn(2, idx.numel(), 6, generator=gen), idx, 0.7)
    levels = torch.randint(0, 3, (n,), generator=gen)
    levels[idx] = C1
    computed = torch.randn(2, idx.numel(), 6, generator=gen)
    cpu = hist.assemble(levels, computed, idx, 0.6)
    gpu_path = hist._blend_all(levels, 0.6)
    gpu_path[:, idx] = computed
    torch.testing.assert_close(gpu_path, cpu, rtol=1e-6, atol=1e-6)
    assert not torch.equal(cpu[:, levels == 2], hist.features[0][:, levels == 2])  # C3 tokens were blended


def test_half_precision_scoring_matches_float32():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, n, 16, generator=gen) for n in (9, 30, 30))
    out32, rec32 = attention_with_received(q, k, v)
    out16, rec16 = attention_with_received(q.bfloat16(), k.bfloat16(), v.bfloat16(), compute_dtype=torch.bfloat16)
    assert out16.dtype == torch.bfloat16 and rec16.dtype == torch.float64
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)
    torch.testing.assert_close(rec16, rec32, rtol=0.02, atol=0.02)
    assert rec32.sum().item() == pytest.approx(2 * 4 * 9, rel=1e-5)  # every query row sums to one
    # on the CPU, and for float32 inputs anywhere, scoring stays in float32
    assert score_dtype(q) == torch.float32 and score_dtype(q.bfloat16()) == torch.float32


@pytest.mark.parametrize("name", ["sd3-digits", "flux-digits"])
def test_testbed_sampler_follows_the_model_device(name):
    # a model on the meta device stands in for a GPU: a CPU tensor meeting its weights raises
    from foretell.specdiff.bench import resolve_model
    from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels

    model = resolve_model(name)
    noise = make_noise(model, 2, 0)
    assert noise.device.type == "cpu"
    model = model.to("meta")
    assert make_noise(model, 2, 0).device.type == "meta"
    out = sample(model, noise, sample_labels(2), scheduler=make_scheduler(model, 3), guidance_scale=4.0)
    assert out.device.type == "meta" and tuple(out.shape) == tuple(noise.shape)


def test_schedule_is_copied_to_the_host_once_per_set_timesteps():
    model = tiny_sd3()
    s = scheduler()
    data = inputs(model, batch=1)
    with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2), scheduler=s, guidance_scale=3.0) as h:
        from _method_tiny import sample

        sample(model, s, data, steps=5)
        hook = h._hook
        first = hook._sigmas_host
        assert hook._sigmas_src is s.sigmas and torch.equal(first, s.sigmas.double())
        assert hook._host_sigmas(s.sigmas) is first  # same schedule tensor: no new copy
        sample(model, s, data, steps=5)  # set_timesteps builds a new tensor: copied again
        assert hook._sigmas_host is not first and hook._sigmas_src is s.sigmas
        assert h.stats()["runs"] == 2 and h.stats()["stock_calls"] == 0
