"""Host work of a cached step: the ATen operators SpecDiff dispatches per transformer call, against
the stock forward, at two depths of a tiny FLUX and SD3 (the per-layer slope and the per-call constant).
On a GPU nearly every operator is a kernel launch; a cached FLUX.1-dev step (57 attention layers) was
bound by them, so these bounds keep the per-layer overhead from growing back silently."""

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.opcount import count_per_call, count_stock_call

from _method_tiny import TEXT, flux_ids, one_thread, scheduler

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)
STEPS = 10


def _flux(dual, single):
    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=dual, num_single_layers=single,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, axes_dims_rope=(4, 4, 8)).eval()


def _sd3(layers):
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, num_layers=layers,
                                 attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                 joint_attention_dim=32, pooled_projection_dim=64, out_channels=4).eval()


def _loop(model):
    g = torch.Generator().manual_seed(0)
    if isinstance(model, FluxTransformer2DModel):
        img_ids, txt_ids = flux_ids()
        x = torch.randn(1, 64, 4, generator=g)
        cond = dict(encoder_hidden_states=torch.randn(1, TEXT, 32, generator=g),
                    pooled_projections=torch.randn(1, 32, generator=g), img_ids=img_ids, txt_ids=txt_ids)
        scale = 1000.0
    else:
        x = torch.randn(1, 4, 16, 16, generator=g)
        cond = dict(encoder_hidden_states=torch.randn(1, TEXT, 32, generator=g),
                    pooled_projections=torch.randn(1, 64, generator=g))
        scale = 1.0

    @torch.no_grad()
    def run(sched):
        sched.set_timesteps(STEPS)
        lat = x.clone()
        for t in sched.timesteps:
            v = model(hidden_states=lat, timestep=t.expand(1) / scale, return_dict=False, **cond)[0]
            lat = sched.step(v, t, lat).prev_sample
        return lat

    def stock_call():
        sched = scheduler()
        sched.set_timesteps(STEPS)
        with torch.no_grad():
            model(hidden_states=x, timestep=sched.timesteps[1].expand(1) / scale, return_dict=False, **cond)

    return run, stock_call


def _extra(model):
    """(extra ops of a cached step without scoring, extra ops of a cached step that scores) over a
    stock call of the same model."""
    run, stock_call = _loop(model)
    stock = sum(count_stock_call(stock_call).values())
    sched = scheduler()
    with apply(model, SpecDiffConfig(), scheduler=sched) as h:
        rows = count_per_call(h, lambda: run(sched))
    cached = [r for r in rows if not r["full"]]
    plain = [r["ops"] for r in cached if not r["record"]]
    scored = [r["ops"] for r in cached if r["record"]]
    assert plain and scored
    assert max(plain) - min(plain) <= 2 and max(scored) - min(scored) <= 2  # no work that grows per step
    return max(plain) - stock, max(scored) - stock


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_cached_step_dispatches_few_operators_beyond_the_stock_forward(family):
    if family == "flux":
        (small_plain, small_scored), (big_plain, big_scored) = _extra(_flux(1, 1)), _extra(_flux(2, 4))
        layers, small_layers = 4, 2  # attention layers added, attention layers of the small model
        # per attention layer FEWER operators than the stock forward: queries and keys take one RoPE
        # pass together (the stock processor runs one each); the K/V cache write is 2 index_copy_
        per_layer = -6
    else:
        (small_plain, small_scored), (big_plain, big_scored) = _extra(_sd3(1)), _extra(_sd3(3))
        layers, small_layers = 2, 1
        per_layer = 2  # one index_copy_ each for the keys and the values (was 5 launches and ~8 views)
    slope = (big_plain - small_plain) / layers
    assert slope <= per_layer
    # scoring on the CPU (explicit probabilities) adds at most this much per layer over plain SDPA
    assert (big_scored - small_scored) / layers - slope <= 20
    # per call: level selection, scores, history, the gather of the kept tokens (and for FLUX of their
    # RoPE rows instead of pos_embed); measured 12 (FLUX) and 74 (SD3)
    assert small_plain - small_layers * slope <= (40 if family == "flux" else 100)


def test_single_blocks_with_hooks_run_their_own_forward():
    """FLUX single-stream blocks share one [text, image] tensor unless a block carries a hook
    (offloading, caching): then every block is called as it is, and the hook runs, same output."""
    model = _flux(1, 2)
    run, _ = _loop(model)
    sched = scheduler()
    with apply(model, SpecDiffConfig(), scheduler=sched):
        plain = run(sched)
    calls = []
    handle = model.single_transformer_blocks[1].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        sched = scheduler()
        with apply(model, SpecDiffConfig(), scheduler=sched):
            hooked = run(sched)
    finally:
        handle.remove()
    assert len(calls) == STEPS + 1  # every main call and the speculative call
    assert torch.equal(plain, hooked)
