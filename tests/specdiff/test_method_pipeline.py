"""SpecDiff through diffusers' StableDiffusion3Pipeline and FluxPipeline built from tiny local parts
(no text encoders: prompt embeddings are passed directly; latents are returned)."""

import pytest
import torch
from diffusers import AutoencoderKL, FluxPipeline, StableDiffusion3Pipeline

from foretell.core.errors import ForetellError
from foretell.specdiff import SpecDiffConfig, apply

from _method_tiny import one_thread, sample, scheduler, tiny_flux, tiny_sd3

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)
STEPS = 6


def _vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=16, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    ).eval()


def _sd3_pipe():
    return StableDiffusion3Pipeline(
        transformer=tiny_sd3(), scheduler=scheduler(), vae=_vae(), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )


def _embeds(seed=0):
    g = torch.Generator().manual_seed(seed)
    pe, ppe = torch.randn(1, 5, 32, generator=g), torch.randn(1, 64, generator=g)
    ne, npe = torch.randn(1, 5, 32, generator=g), torch.randn(1, 64, generator=g)
    latents = torch.randn(1, 4, 16, 16, generator=g)
    return pe, ppe, ne, npe, latents


def _sd3_call(pipe, seed=0):
    pe, ppe, ne, npe, latents = _embeds(seed)
    return pipe(
        prompt_embeds=pe, pooled_prompt_embeds=ppe, negative_prompt_embeds=ne, negative_pooled_prompt_embeds=npe,
        latents=latents, height=16, width=16, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
    ).images


def test_sd3_pipeline_matches_hand_loop_and_reads_guidance_from_pipeline():
    pipe = _sd3_pipe()
    cfg = SpecDiffConfig(cache_rate=0.75, warmup_steps=2)
    ref = _sd3_call(pipe)
    with apply(pipe, SpecDiffConfig(cache_rate=0.0)):
        assert torch.equal(_sd3_call(pipe), ref)
    with apply(pipe, cfg) as h:
        first, second = _sd3_call(pipe), _sd3_call(pipe)
        other = _sd3_call(pipe, seed=1)
        st = h.stats()
    assert torch.equal(first, second) and not torch.equal(first, ref)
    assert st["runs"] == 3 and st["speculative_calls"] == 3 and st["stock_calls"] == 0
    assert [p["full"] for p in st["per_step"]] == [True, True, False, False, False, False]
    with apply(pipe, cfg):
        assert torch.equal(_sd3_call(pipe, seed=1), other)  # a fresh handle gives the same second image
    # the same run by a hand-written loop on the bare transformer with the pipeline's CFG scale
    pe, ppe, ne, npe, latents = _embeds(0)
    data = {"x": latents, "cond": dict(encoder_hidden_states=torch.cat([ne, pe]), pooled_projections=torch.cat([npe, ppe]))}
    s = scheduler()
    with apply(pipe.transformer, cfg, scheduler=s, guidance_scale=4.0):
        hand = sample(pipe.transformer, s, data, steps=STEPS, guidance=4.0)
    assert torch.allclose(hand, first, atol=1e-6)
    with apply(pipe.transformer, cfg, scheduler=s, guidance_scale=None):  # speculation without CFG differs
        no_cfg_spec = sample(pipe.transformer, s, data, steps=STEPS, guidance=4.0)
    assert not torch.allclose(no_cfg_spec, first, atol=1e-6)


def _flux_pipe():
    return FluxPipeline(
        scheduler=scheduler(), vae=_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        transformer=tiny_flux(guidance_embeds=True, in_channels=16),
    )


def _flux_call(pipe, **extra):
    g = torch.Generator().manual_seed(0)
    pe, ppe = torch.randn(1, 5, 32, generator=g), torch.randn(1, 32, generator=g)
    return pipe(
        prompt_embeds=pe, pooled_prompt_embeds=ppe, height=16, width=16, num_inference_steps=STEPS,
        guidance_scale=3.5, output_type="latent", generator=torch.Generator().manual_seed(1), **extra,
    ).images


def test_flux_pipeline_runs_resets_and_refuses_true_cfg():
    pipe = _flux_pipe()
    ref = _flux_call(pipe)
    with apply(pipe, SpecDiffConfig(cache_rate=0.0)):
        assert torch.equal(_flux_call(pipe), ref)
    with apply(pipe, SpecDiffConfig(cache_rate=0.75, warmup_steps=2)) as h:
        first, second = _flux_call(pipe), _flux_call(pipe)
        st = h.stats()
        assert torch.equal(first, second) and not torch.equal(first, ref)
        assert st["runs"] == 2 and st["computed_token_fraction"] == pytest.approx((2 * 64 + 4 * 16) / (6 * 64))
        with pytest.raises(ForetellError, match="true_cfg_scale"):
            _flux_call(pipe, negative_prompt_embeds=torch.zeros(1, 5, 32), negative_pooled_prompt_embeds=torch.zeros(1, 32),
                       true_cfg_scale=2.0)
    assert torch.equal(_flux_call(pipe), ref)
