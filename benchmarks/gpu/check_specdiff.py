"""GPU check of specdiff: see benchmarks/gpu/run_all.py.

Sub-steps, each recorded on its own (its result, or its error and traceback), in this order:

* testbed: sd3-digits on the device, full vs SpecDiff (28 steps, CFG 4, 8 samples): PSNR of SpecDiff
  against full, and both against the same runs on the CPU (device parity).
* bench: ``run_bench(BenchConfig(device=...))`` on sd3-digits (full, specdiff, ras_like, taylorseer,
  with the premise check) and flux-digits (full, specdiff): speed-up, MACs fraction, PSNR per method.
* sd3_medium: random-init SD3-medium-sized SD3Transformer2DModel (24 joint blocks, width 1536), bf16,
  1024 px (128x128 latent), 28 steps, CFG 7 in one [uncond, cond] batch: full vs SpecDiff wall time.
* flux_dev: random-init FLUX.1-dev-sized FluxTransformer2DModel (19 double + 38 single blocks, width
  3072, guidance embedding; half the blocks if the part has already run 95 s, see ``blocks``), bf16,
  512 px (64x64 latent, 1024 packed tokens, 512 text tokens), 28 steps with FluxPipeline's dynamic
  shift and its bf16 timestep: full vs SpecDiff wall time.
* scoring (before sd3_medium): one attention layer at the SD3-medium (full and partial step) and FLUX
  shapes: per-call time of plain SDPA and of each score_backend (explicit, sdpa, triton), and each
  backend's received attention against a float32 explicit reference (relative error, top-20% overlap).
  The Triton kernel is first tried in a subprocess (a faulty kernel must not break this process's
  CUDA context); if that fails it is switched off and "triton" runs the matmul pass.
* sd3_medium / flux_dev also get ``variants``: full vs SpecDiff default vs each knob (score_backend
  explicit / sdpa, score_layer_stride 4, and a scoring floor where only layer 0 scores), median of 2
  runs after a warm-up, speed-up, MACs fraction, latent relative error vs full and vs default; and
  ``profile``: torch.profiler (CPU + CUDA) over one default SpecDiff run: top 15 ops and kernels by CUDA
  time, and the CUDA time inside scoring, the speculative pass and the level/history bookkeeping.
  Variants and profiles that would start after the part has run ``DEADLINE_S`` are skipped (recorded).

* flux_dev also gets ``ops_per_call``: ATen operators per transformer call (stock step, SpecDiff full,
  cached with and without scoring; the most frequent ones of a cached step), a proxy for host time.

``args.subset`` (``run_all.py --subset``) picks sub-steps by name (none of ours named: all run). With
``flux_dev`` alone, the FLUX sub-step runs full vs default (the timed pair), the two variants fastest
on FLUX in run 3 (stride4, explicit; one timed run each), the profile and the operator counts, in that
order, and skips what would start past ``SUBSET_DEADLINE_S`` (run 3 spent ~40 s building the model).

On the CPU (a smoke run of this script) the same code runs with tiny sizes.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback

import numpy as np
import torch

import common
from specdiff_profile import _ops_per_call, _profile
from specdiff_scoring import _scoring

STEPS = 28
FLUX_FULL_SIZE_BEFORE_S = 95.0  # past this much of the part, the FLUX model gets half the blocks
DEADLINE_S = 125.0  # variants and profiles that would start later are skipped
SUBSET_DEADLINE_S = 66.0  # the same with ``--subset flux_dev`` (the whole part in about 70 s)
VARIANTS = (("default", {}), ("explicit", {"score_backend": "explicit"}), ("sdpa", {"score_backend": "sdpa"}),
            ("stride4", {"score_layer_stride": 4}), ("score_floor", {"score_layer_stride": 10**6}))
FLUX_ONLY_VARIANTS = ("default", "stride4", "explicit")  # the fastest two on FLUX in run 3, and default
_START = [0.0]
DEADLINE = [DEADLINE_S]


def _left() -> float:
    return DEADLINE[0] - (time.perf_counter() - _START[0])


def run(args) -> dict:
    res = {"device": common.DEV}
    start = _START[0] = time.perf_counter()
    steps = (("testbed", _testbed), ("bench", _bench), ("scoring", _scoring), ("sd3_medium", _sd3_medium),
             ("flux_dev", lambda: _flux_dev(half=time.perf_counter() - start > FLUX_FULL_SIZE_BEFORE_S,
                                            only=chosen == ["flux_dev"])))
    subset = set(getattr(args, "subset", None) or ())
    chosen = [n for n, _ in steps if n in subset] or [n for n, _ in steps]  # names not ours: run all
    DEADLINE[0] = SUBSET_DEADLINE_S if chosen == ["flux_dev"] else DEADLINE_S
    res["subset"] = chosen
    for name, fn in steps:
        if name in chosen:
            common.run_substep(res, name, fn, peak=True)
    # flat keys of the first version of this check
    res["testbed_device"] = res.get("testbed", {}).get("device")
    res["testbed_psnr_vs_full"] = res.get("testbed", {}).get("psnr_specdiff_vs_full")
    for key in ("full_s", "specdiff_s", "speedup", "params_billion"):
        res[f"sd3_medium_{key}"] = res.get("sd3_medium", {}).get(key)
    res["variants_speedup"] = {m: {n: r["speedup"] for n, r in res.get(m, {}).get("variants", {}).items()
                                   if isinstance(r, dict) and "speedup" in r} for m in ("sd3_medium", "flux_dev")}
    res["ok"] = all(bool(res[n].get("ok")) for n in chosen)
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


def _timed_pair(tr, loop, make_scheduler, config, guidance_scale, repeats: int = 1,
                latents: dict | None = None) -> dict:
    """Full and SpecDiff wall seconds (GPU synchronised, after one warm-up run each; the full run is
    timed again after SpecDiff as a drift check) of ``loop(scheduler)``, plus SpecDiff's stats.
    ``latents``, if given, receives full's and SpecDiff's (seconds, latents[, stats]) for :func:`_variants`."""
    import foretell.specdiff as sd

    t_full, lat_full = common.timed(lambda: loop(make_scheduler()), repeats=repeats)
    spec_sched = make_scheduler()
    with sd.apply(tr, config, scheduler=spec_sched, guidance_scale=guidance_scale) as h:
        t_spec, lat_spec = common.timed(lambda: loop(spec_sched), repeats=repeats)
        st = h.stats()
    t_full2, _ = common.timed(lambda: loop(make_scheduler()), repeats=1, warmup=0)  # drift check
    full = min(t_full, t_full2)
    if latents is not None:  # handed to _variants, so it need not time full and default again
        latents.update(full=(t_full, lat_full), default=(t_spec, lat_spec, st))
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
    out["variants"] = _variants(tr, loop, make_scheduler, cfg_scale)
    out["profile"] = _guarded(lambda: _profile(tr, loop, make_scheduler, cfg_scale))
    return out


def _flux_dev(half: bool = False, only: bool = False) -> dict:
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
    timed = {} if only else None
    out.update(_timed_pair(tr, loop, make_scheduler, sd.SpecDiffConfig(), None, latents=timed))
    out["ok"] = bool(out["finite"] and out["stock_calls"] == 0 and out["macs_fraction"] < 1.0
                     and math.isfinite(out["latent_rel_err"]))
    # the profile after every timing: a CUDA profiler session leaves CUPTI attached, which slows later
    # kernel launches (run 4 timed stride4 / explicit after it, against a pair timed before it)
    if only:
        out["variants"] = _variants(tr, loop, make_scheduler, None, FLUX_ONLY_VARIANTS, timed)
    else:
        out["variants"] = _variants(tr, loop, make_scheduler, None)
    out["profile"] = _guarded(lambda: _profile(tr, loop, make_scheduler, None))
    out["ops_per_call"] = _guarded(lambda: _ops_per_call(tr, loop, make_scheduler, None, steps))
    return out


def _guarded(fn) -> dict:
    """``fn()``, or its error and traceback; skipped when the part is past ``DEADLINE_S``."""
    if _left() <= 0:
        return {"skipped": f"the part has run past {DEADLINE[0]:.0f} s"}
    try:
        return fn()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _variants(tr, loop, make_scheduler, guidance, names=None, timed=None) -> dict:
    """Full vs SpecDiff default vs each knob of ``VARIANTS`` (those in ``names``, default all): median of
    2 runs after one warm-up. ``timed`` (from :func:`_timed_pair`): full and default are taken from it
    (marked ``from_pair``) and each knob is timed once, after a warm-up only if it changes the backend."""
    import foretell.specdiff as sd
    from foretell.specdiff import received

    out = {}
    try:
        if timed:
            t_full, lat_full = timed["full"]
            out["full"] = {"median_s": t_full, "from_pair": True}
        else:
            t_full, lat_full = common.timed(lambda: loop(make_scheduler()), repeats=2, warmup=0)
            out["full"] = {"median_s": t_full}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    lat_default = None
    if timed:
        t, lat_default, st = timed["default"]
        out["default"] = {"knobs": {}, "median_s": t, "speedup": t_full / t, "macs_fraction": st["macs_fraction"],
                          "computed_token_fraction": st["computed_token_fraction"],
                          "latent_rel_err": _rel(lat_default, lat_full), "score_backends": st["score_backends"],
                          "stock_calls": st["stock_calls"], "from_pair": True}
    for name, knobs in VARIANTS:
        if (names is not None and name not in names) or name in out:
            continue
        if _left() <= 0:
            out[name] = {"skipped": f"the part has run past {DEADLINE[0]:.0f} s"}
            continue
        try:
            cfg = dataclasses.replace(sd.SpecDiffConfig(), **knobs)
            sched = make_scheduler()
            with sd.apply(tr, cfg, scheduler=sched, guidance_scale=guidance) as h:
                # with ``timed`` the default runs warmed the kernels and shapes of every knob but another backend
                warm = 0 if timed and "score_backend" not in knobs else 1
                t, lat = common.timed(lambda: loop(sched), repeats=1 if timed else 2, warmup=warm)
                st = h.stats()
            row = {"knobs": knobs, "median_s": t, "speedup": t_full / t, "macs_fraction": st["macs_fraction"],
                   "computed_token_fraction": st["computed_token_fraction"], "latent_rel_err": _rel(lat, lat_full),
                   "score_backends": st["score_backends"], "stock_calls": st["stock_calls"]}
            if name == "default":
                lat_default = lat
            elif lat_default is not None:
                row["latent_rel_err_vs_default"] = _rel(lat, lat_default)
            out[name] = row
        except Exception as exc:
            out[name] = {"knobs": knobs, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()}
    timed_rows = {n: r for n, r in out.items() if n != "full" and "median_s" in r}
    out["fastest"] = min(timed_rows, key=lambda n: timed_rows[n]["median_s"]) if timed_rows else None
    out["scoring_state"] = received.scoring_state()
    return out


