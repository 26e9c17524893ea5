"""GPU check of specdiff: see benchmarks/gpu/run_all.py."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import common


def run(args) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    import foretell.specdiff as sd
    from foretell.specdiff.bench import resolve_model
    from foretell.specdiff.testbed import metrics
    from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels

    res = {}
    model = resolve_model("sd3-digits").to(common.DEV)
    noise = make_noise(model, 8, 0).to(common.DEV)
    labels = sample_labels(8).to(common.DEV)
    full = sample(model, noise, labels, scheduler=make_scheduler(model, 28), guidance_scale=4.0)
    sched = make_scheduler(model, 28)
    h = sd.apply(model.transformer, sd.SpecDiffConfig(), scheduler=sched, guidance_scale=4.0)
    fast = sample(model, noise, labels, scheduler=sched, guidance_scale=4.0)
    h.remove()
    res["testbed_device"] = str(fast.device)
    res["testbed_psnr_vs_full"] = metrics.psnr(fast.float().cpu(), full.float().cpu())

    torch.manual_seed(0)
    big = common.DEV == "cuda"           # on cpu (smoke run of this script) a 2-layer toy of the same class
    size, layers, heads, text_len = (128, 24, 24, 333) if big else (32, 2, 2, 16)
    with torch.device(common.DEV):
        tr = SD3Transformer2DModel(sample_size=size, patch_size=2, in_channels=16, num_layers=layers,
                                   attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=4096,
                                   caption_projection_dim=64 * heads, pooled_projection_dim=2048, out_channels=16,
                                   pos_embed_max_size=192 if big else 64)
    tr = tr.to(torch.bfloat16).eval()
    res["sd3_params_billion"] = sum(p.numel() for p in tr.parameters()) / 1e9
    steps, cfg_scale = 28, 7.0
    g = torch.Generator(common.DEV).manual_seed(0)
    lat0 = torch.randn(1, 16, size, size, device=common.DEV, dtype=torch.bfloat16, generator=g)
    text = torch.randn(2, text_len, 4096, device=common.DEV, dtype=torch.bfloat16, generator=g)
    pooled = torch.randn(2, 2048, device=common.DEV, dtype=torch.bfloat16, generator=g)

    def loop(scheduler):
        scheduler.set_timesteps(steps, device=common.DEV)
        lat = lat0.clone()
        with torch.no_grad():
            for t in scheduler.timesteps:
                inp = torch.cat([lat, lat])
                v = tr(hidden_states=inp, encoder_hidden_states=text, pooled_projections=pooled,
                       timestep=t.expand(2)).sample
                vu, vc = v.chunk(2)
                lat = scheduler.step(vu + cfg_scale * (vc - vu), t, lat).prev_sample
        return lat

    base_sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    t_full, lat_full = common.timed(lambda: loop(base_sched))
    spec_sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    h = sd.apply(tr, sd.SpecDiffConfig(), scheduler=spec_sched, guidance_scale=cfg_scale)
    t_spec, lat_spec = common.timed(lambda: loop(spec_sched))
    h.remove()
    t_full2, _ = common.timed(lambda: loop(base_sched), warmup=0)
    res.update(sd3_medium_full_s=t_full, sd3_medium_full_again_s=t_full2, sd3_medium_specdiff_s=t_spec,
               sd3_medium_speedup=min(t_full, t_full2) / t_spec,
               sd3_medium_latent_rel_err=float((lat_spec.float() - lat_full.float()).norm() / lat_full.float().norm()),
               peak_gb=torch.cuda.max_memory_allocated() / 1e9 if common.DEV == "cuda" else None)
    res["ok"] = bool(res["testbed_psnr_vs_full"] > 20 and torch.isfinite(lat_spec.float()).all())
    return res
