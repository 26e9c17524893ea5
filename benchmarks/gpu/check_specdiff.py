"""GPU check of specdiff: see benchmarks/gpu/run_all.py.

Sub-steps, each recorded on its own (its result, or its error and traceback), in this order:

* testbed: sd3-digits on the device, full vs SpecDiff (28 steps, CFG 4, 8 samples): PSNR of SpecDiff
  against full, and both against the same runs on the CPU (device parity).
* bench: ``run_bench(BenchConfig(device=...))`` on sd3-digits (full, specdiff, ras_like, taylorseer,
  with the premise check) and flux-digits (full, specdiff): speed-up, MACs fraction, PSNR per method.
* sd3_medium: random-init SD3-medium-sized SD3Transformer2DModel (24 joint blocks, width 1536), bf16,
  1024 px (128x128 latent), 28 steps, CFG 7 in one [uncond, cond] batch: full vs SpecDiff wall time.
* flux_dev: random-init FLUX.1-dev-sized FluxTransformer2DModel (19 double + 38 single blocks, width
  3072, guidance embedding; half the blocks if the part has already run 80 s, see ``blocks``), bf16,
  512 px (64x64 latent, 1024 packed tokens, 512 text tokens), 28 steps with FluxPipeline's dynamic
  shift and its bf16 timestep: full vs SpecDiff wall time.

On the CPU (a smoke run of this script) the same code runs with tiny sizes.
"""

from __future__ import annotations

import gc
import math
import time
import traceback

import numpy as np
import torch

import common

STEPS = 28
FLUX_FULL_SIZE_BEFORE_S = 80.0  # past this much of the part, the FLUX model gets half the blocks


def run(args) -> dict:
    res = {"device": common.DEV}
    start = time.perf_counter()
    steps = (("testbed", _testbed), ("bench", _bench), ("sd3_medium", _sd3_medium),
             ("flux_dev", lambda: _flux_dev(half=time.perf_counter() - start > FLUX_FULL_SIZE_BEFORE_S)))
    for name, fn in steps:
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:  # recorded; the next sub-step still runs
            res[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        res[name]["seconds"] = time.perf_counter() - t0
        gc.collect()
        if common.DEV == "cuda":
            res[name]["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    # flat keys of the first version of this check
    res["testbed_device"] = res["testbed"].get("device")
    res["testbed_psnr_vs_full"] = res["testbed"].get("psnr_specdiff_vs_full")
    for key in ("full_s", "specdiff_s", "speedup", "params_billion"):
        res[f"sd3_medium_{key}"] = res["sd3_medium"].get(key)
    res["ok"] = all(bool(res[n].get("ok")) for n in ("testbed", "bench", "sd3_medium", "flux_dev"))
    return res


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x.float()).all())


def _testbed() -> dict:
    import foretell.specdiff as sd
    from foretell.specdiff.bench import resolve_model
    from foretell.specdiff.testbed import metrics
    from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels

    out = {}
    images = {}
    for dev in dict.fromkeys([common.DEV, "cpu"]):
        model = resolve_model("sd3-digits").to(dev)
        noise, labels = make_noise(model, 8, 0), sample_labels(8, dev)
        full = sample(model, noise, labels, scheduler=make_scheduler(model, STEPS), guidance_scale=4.0)
        sched = make_scheduler(model, STEPS)
        with sd.apply(model.transformer, sd.SpecDiffConfig(), scheduler=sched, guidance_scale=4.0) as h:
            fast = sample(model, noise, labels, scheduler=sched, guidance_scale=4.0)
            stats = h.stats()
        images[dev] = (full.float().cpu(), fast.float().cpu())
        if dev == common.DEV:
            out.update(device=str(fast.device), stock_calls=stats["stock_calls"], macs_fraction=stats["macs_fraction"],
                       finite=_finite(full) and _finite(fast))
    full, fast = images[common.DEV]
    out["psnr_specdiff_vs_full"] = metrics.psnr(fast, full)
    cpu_full, cpu_fast = images["cpu"]
    out["psnr_full_device_vs_cpu"] = metrics.psnr(full, cpu_full)  # inf when bit-identical
    out["psnr_specdiff_device_vs_cpu"] = metrics.psnr(fast, cpu_fast)
    out["ok"] = bool(out["finite"] and out["device"].startswith(common.DEV) and out["stock_calls"] == 0
                     and out["psnr_specdiff_vs_full"] > 20 and out["psnr_full_device_vs_cpu"] > 30)
    return out


def _bench() -> dict:
    from foretell.specdiff.bench import BenchConfig, run_bench

    big = common.DEV == "cuda"
    out, ok = {}, True
    plans = (("sd3-digits", ("full", "specdiff", "ras_like", "taylorseer"), True),
             ("flux-digits", ("full", "specdiff"), False))
    for model, methods, premise in plans:
        cfg = BenchConfig(model=model, device=common.DEV, steps=STEPS if big else 6, samples=16 if big else 4,
                          methods=methods, repeats=2 if big else 1, premise=premise and big)
        rep = run_bench(cfg, log=lambda *a: None)
        row = {"config_device": rep["config"]["device"], "skipped": rep["skipped"], "methods": {}}
        for name, m in rep["methods"].items():
            row["methods"][name] = {k: m[k] for k in ("seconds", "speedup", "macs_fraction", "psnr", "ssim", "class_acc")}
        if "premise_check" in rep:
            row["premise_check"] = rep["premise_check"]
        finite = all(_finite(img) for img in rep["images"].values())
        spec = rep["methods"].get("specdiff", {})
        row["ok"] = bool(finite and rep["config"]["device"] == common.DEV and spec.get("psnr") is not None
                         and spec["psnr"] > 15 and spec["macs_fraction"] < 1.0)
        ok = ok and row["ok"]
        out[model] = row
    out["ok"] = ok
    return out


def _timed_pair(tr, loop, make_scheduler, config, guidance_scale, repeats: int = 1) -> dict:
    """Full and SpecDiff wall seconds (GPU synchronised, after one warm-up run each; the full run is
    timed again after SpecDiff as a drift check) of ``loop(scheduler)``, plus SpecDiff's stats."""
    import foretell.specdiff as sd

    t_full, lat_full = common.timed(lambda: loop(make_scheduler()), repeats=repeats)
    spec_sched = make_scheduler()
    with sd.apply(tr, config, scheduler=spec_sched, guidance_scale=guidance_scale) as h:
        t_spec, lat_spec = common.timed(lambda: loop(spec_sched), repeats=repeats)
        st = h.stats()
    t_full2, _ = common.timed(lambda: loop(make_scheduler()), repeats=1, warmup=0)  # drift check
    full = min(t_full, t_full2)
    return {"full_s": t_full, "full_again_s": t_full2, "specdiff_s": t_spec, "speedup": full / t_spec,
            "macs_fraction": st["macs_fraction"], "computed_token_fraction": st["computed_token_fraction"],
            "speculative_macs_fraction": st["speculative_macs_fraction"], "stock_calls": st["stock_calls"],
            "stock_reasons": st["stock_reasons"], "cache_gb": st["cache_bytes"] / 1e9,
            "latent_rel_err": float((lat_spec.float() - lat_full.float()).norm() / lat_full.float().norm()),
            "finite": _finite(lat_full) and _finite(lat_spec)}


def _sd3_medium() -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    import foretell.specdiff as sd

    dev, big = common.DEV, common.DEV == "cuda"
    size, layers, heads, text_len = (128, 24, 24, 333) if big else (16, 2, 2, 8)
    torch.manual_seed(0)
    with torch.device(dev):
        tr = SD3Transformer2DModel(sample_size=size, patch_size=2, in_channels=16, num_layers=layers,
                                   attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=4096,
                                   caption_projection_dim=64 * heads, pooled_projection_dim=2048, out_channels=16,
                                   pos_embed_max_size=192 if big else 64)
    tr = tr.to(torch.bfloat16).eval()
    g = torch.Generator(dev).manual_seed(0)
    lat0 = torch.randn(1, 16, size, size, device=dev, dtype=torch.bfloat16, generator=g)
    text = torch.randn(2, text_len, 4096, device=dev, dtype=torch.bfloat16, generator=g)
    pooled = torch.randn(2, 2048, device=dev, dtype=torch.bfloat16, generator=g)
    steps, cfg_scale = STEPS if big else 6, 7.0

    def make_scheduler():
        return FlowMatchEulerDiscreteScheduler(shift=3.0)

    @torch.no_grad()
    def loop(scheduler):
        scheduler.set_timesteps(steps, device=dev)  # as StableDiffusion3Pipeline: timesteps on the device
        lat = lat0.clone()
        for t in scheduler.timesteps:
            v = tr(hidden_states=torch.cat([lat, lat]), encoder_hidden_states=text, pooled_projections=pooled,
                   timestep=t.expand(2), return_dict=False)[0]
            vu, vc = v.chunk(2)
            lat = scheduler.step(vu + cfg_scale * (vc - vu), t, lat, return_dict=False)[0]
        return lat

    out = {"params_billion": sum(p.numel() for p in tr.parameters()) / 1e9, "steps": steps,
           "image_tokens": (size // 2) ** 2, "text_tokens": text_len}
    out.update(_timed_pair(tr, loop, make_scheduler, sd.SpecDiffConfig(), cfg_scale))
    out["ok"] = bool(out["finite"] and out["stock_calls"] == 0 and out["macs_fraction"] < 1.0)
    return out


def _flux_dev(half: bool = False) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    import foretell.specdiff as sd

    dev, big = common.DEV, common.DEV == "cuda"
    if big:  # FLUX.1-dev: 19 double + 38 single blocks, 24 heads x 128, T5 4096-d, CLIP pooled 768-d
        side, text_len, shape = 32, 512, dict(num_layers=10 if half else 19, num_single_layers=19 if half else 38,
                                               attention_head_dim=128, num_attention_heads=24, axes_dims_rope=(16, 56, 56))
    else:
        side, text_len, shape = 8, 8, dict(num_layers=1, num_single_layers=2, attention_head_dim=16,
                                           num_attention_heads=2, axes_dims_rope=(4, 6, 6))
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: 12B parameters in fp32 would not fit
    try:
        with torch.device(dev):
            tr = FluxTransformer2DModel(patch_size=1, in_channels=64, joint_attention_dim=4096,
                                        pooled_projection_dim=768, guidance_embeds=True, **shape)
    finally:
        torch.set_default_dtype(before)
    tr = tr.to(torch.bfloat16).eval()
    n = side * side
    g = torch.Generator(dev).manual_seed(0)
    lat0 = torch.randn(1, n, 64, device=dev, dtype=torch.bfloat16, generator=g)
    text = torch.randn(1, text_len, 4096, device=dev, dtype=torch.bfloat16, generator=g)
    pooled = torch.randn(1, 768, device=dev, dtype=torch.bfloat16, generator=g)
    guidance = torch.full([1], 3.5, device=dev, dtype=torch.float32)
    img_ids = torch.zeros(side, side, 3, device=dev)
    img_ids[..., 1] = torch.arange(side, device=dev)[:, None]
    img_ids[..., 2] = torch.arange(side, device=dev)[None, :]
    img_ids = img_ids.reshape(n, 3).to(torch.bfloat16)
    txt_ids = torch.zeros(text_len, 3, device=dev, dtype=torch.bfloat16)
    steps = STEPS if big else 6
    mu = 0.5 + (n - 256) * (1.15 - 0.5) / (4096 - 256)  # FluxPipeline's calculate_shift

    def make_scheduler():
        return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096)

    @torch.no_grad()
    def loop(scheduler):
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device=dev, mu=mu)  # as FluxPipeline
        lat = lat0.clone()
        for t in scheduler.timesteps:
            ts = t.expand(1).to(lat.dtype)  # FluxPipeline casts the timestep to the latents' dtype
            v = tr(hidden_states=lat, timestep=ts / 1000, guidance=guidance, pooled_projections=pooled,
                   encoder_hidden_states=text, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
            lat = scheduler.step(v, t, lat, return_dict=False)[0]
        return lat

    out = {"params_billion": sum(p.numel() for p in tr.parameters()) / 1e9, "steps": steps, "image_tokens": n,
           "text_tokens": text_len, "mu": mu, "blocks": [shape["num_layers"], shape["num_single_layers"]],
           "reduced_for_time": half}
    out.update(_timed_pair(tr, loop, make_scheduler, sd.SpecDiffConfig(), None))
    out["ok"] = bool(out["finite"] and out["stock_calls"] == 0 and out["macs_fraction"] < 1.0
                     and math.isfinite(out["latent_rel_err"]))
    return out
