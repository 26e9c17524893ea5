"""Every method of the comparison behind one interface: no cache, diffusers' built-in caches, SpecDiff
and its ablations (``toca_like`` / ``ras_like`` are history-only configurations of SpecDiff).

``install_method(name, model, scheduler, ...)`` returns an :class:`InstalledMethod`; the bench calls
``before_run()`` ahead of each sampling run (fresh state, as a new pipeline call would have), passes
``step_callback`` to the sampler, and ``remove()``s it before the next method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from foretell.core.errors import ForetellError

DIFFUSERS_PEERS = ("first_block_cache", "taylorseer", "pab", "faster_cache", "mag_cache")
SPECDIFF_VARIANTS = {
    # name: SpecDiffConfig overrides on top of the bench's cache_rate / speculative_steps
    "specdiff": {},
    "specdiff_history_only": {"score": "history"},
    "specdiff_future_only": {"score": "future"},
    "specdiff_no_levels": {"blend": False},
    "specdiff_no_cf": {"max_cached_count": 0},
    "toca_like": {"score": "history", "blend": True},
    "ras_like": {"score": "history", "blend": False, "max_cached_count": 0},
}
ALL_METHODS = ("full", "specdiff", *DIFFUSERS_PEERS, "toca_like", "ras_like",
               "specdiff_history_only", "specdiff_future_only", "specdiff_no_levels", "specdiff_no_cf")
DEFAULT_METHODS = ("full", "specdiff", "specdiff_history_only", "specdiff_future_only", "specdiff_no_levels",
                   *DIFFUSERS_PEERS, "toca_like", "ras_like")


class MethodSkipped(Exception):
    """A method that cannot run on this model class; the message says why (it goes into the report)."""


@dataclass
class InstalledMethod:
    """A method switched on for one model: callbacks the bench calls around each sampling run."""

    name: str
    config: dict = field(default_factory=dict)
    scheduler: Any = None
    before_run: Callable[[], None] = lambda: None
    step_callback: Callable[[int, float], None] | None = None
    after_run: Callable[[], None] = lambda: None
    stats: Callable[[], dict] = dict
    remove: Callable[[], None] = lambda: None


def check_method_names(names: list[str]) -> list[str]:
    """Validate ``--methods``: known names only; ``full`` is always first (it is the reference)."""
    bad = [n for n in names if n not in ALL_METHODS]
    if bad or not names:
        raise ForetellError(f"unknown method(s) {bad or names!r}; accepted: {', '.join(ALL_METHODS)}")
    return ["full"] + [n for n in dict.fromkeys(names) if n != "full"]


def install_method(name: str, model, scheduler, *, guidance_scale: float, steps: int,
                   cache_rate: float, speculative_steps: int, calibrate: Callable[[], Any] | None = None,
                   mag_ratios: list[float] | None = None) -> InstalledMethod:
    """Switch method ``name`` on for ``model.transformer``; raises :class:`MethodSkipped` if it cannot run.

    ``calibrate`` runs one plain sampling call (MagCache calibrates its ratios on it unless ``mag_ratios``
    from an earlier calibration are given).
    """
    if name == "full":
        return InstalledMethod("full")
    if name in SPECDIFF_VARIANTS:
        return _install_specdiff(name, model, scheduler, guidance_scale, cache_rate, speculative_steps)
    if name in DIFFUSERS_PEERS:
        return _install_diffusers_cache(name, model, scheduler, steps, calibrate, mag_ratios)
    raise ForetellError(f"unknown method {name!r}; accepted: {', '.join(ALL_METHODS)}")


def specdiff_config(name: str, cache_rate: float, speculative_steps: int):
    """The ``SpecDiffConfig`` of a SpecDiff variant / history-only peer."""
    from foretell.specdiff import SpecDiffConfig

    return SpecDiffConfig(cache_rate=cache_rate, speculative_steps=speculative_steps, **SPECDIFF_VARIANTS[name])


def _install_specdiff(name, model, scheduler, guidance_scale, cache_rate, speculative_steps) -> InstalledMethod:
    try:
        from foretell.specdiff import apply
    except (ImportError, AttributeError) as exc:  # the method package is not importable
        raise MethodSkipped(f"foretell.specdiff.apply unavailable: {exc}") from exc
    cfg = specdiff_config(name, cache_rate, speculative_steps)
    handle = apply(model.transformer, cfg, scheduler=scheduler, guidance_scale=guidance_scale)
    return InstalledMethod(name, config=cfg.as_dict(), before_run=handle.reset_state,
                           stats=lambda: {k: v for k, v in handle.stats().items() if k != "per_step"},
                           remove=handle.remove)


# --------------------------------------------------------------------------- diffusers' caches
def _diffusers_config(name: str, steps: int, timestep: dict, mag_ratios=None):
    import torch
    from diffusers.hooks import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig,
                                 PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)

    current = lambda: timestep["t"]  # noqa: E731  (the pipelines pass the current scheduler timestep)
    if name == "first_block_cache":
        return FirstBlockCacheConfig(threshold=0.05)
    if name == "taylorseer":
        return TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3, max_order=1,
                                     taylor_factors_dtype=torch.float32)
    if name == "pab":
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                               spatial_attention_timestep_skip_range=(100, 800),
                                               current_timestep_callback=current)
    if name == "faster_cache":
        return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                                 current_timestep_callback=current, attention_weight_callback=lambda _: 0.3,
                                 tensor_format="BCHW", is_guidance_distilled=False,
                                 _unconditional_conditional_input_kwargs_identifiers=[
                                     "hidden_states", "encoder_hidden_states", "timestep", "pooled_projections"])
    if name == "mag_cache":
        if mag_ratios is None:
            return MagCacheConfig(calibrate=True, num_inference_steps=steps)
        return MagCacheConfig(threshold=0.06, max_skip_steps=3, retention_ratio=0.2,
                              num_inference_steps=steps, mag_ratios=list(mag_ratios))
    raise ForetellError(f"not a diffusers cache: {name}")


def _describe(cfg) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v))
            for k, v in vars(cfg).items() if not k.startswith("_") and not callable(v)}


def _apply(name: str, transformer, cfg) -> None:
    from diffusers import hooks as H

    fn = {"first_block_cache": H.apply_first_block_cache, "taylorseer": H.apply_taylorseer_cache,
          "pab": H.apply_pyramid_attention_broadcast, "faster_cache": H.apply_faster_cache,
          "mag_cache": H.apply_mag_cache}[name]
    fn(transformer, cfg)
    H.HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()


def _remove_all(transformer) -> None:
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for child in (registry, *registry._get_child_registries()):
        for hook_name in list(child._hook_order):
            child.remove_hook(hook_name, recurse=False)
    registry.invalidate_child_registries_cache()


def _install_diffusers_cache(name, model, scheduler, steps, calibrate, mag_ratios=None) -> InstalledMethod:
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    transformer = model.transformer
    timestep = {"t": 1000}
    if name == "mag_cache" and mag_ratios is None:
        if calibrate is None:
            raise MethodSkipped("MagCache needs a calibration run (pass calibrate=...)")
        mag_ratios = _calibrate_mag_cache(model, steps, timestep, calibrate)

    cfg = _diffusers_config(name, steps, timestep, mag_ratios)
    try:
        _apply(name, transformer, cfg)
    except Exception as exc:  # diffusers rejects the model class (e.g. no block registry entry)
        _remove_all(transformer)
        raise MethodSkipped(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    registry = HookRegistry.check_if_exists_or_initialize(transformer)

    def before_run():
        registry.reset_stateful_hooks(recurse=True)
        timestep["t"] = 1000

    def step_callback(i: int, t: float) -> None:
        timestep["t"] = t
        _set_cache_context(transformer, CacheContext("cfg", step_index=i, num_inference_steps=steps,
                                                     timestep=t, sigma=float(scheduler.sigmas[i])))

    def after_run():
        _set_cache_context(transformer, None)

    info = _describe(cfg)
    if mag_ratios is not None:
        info["mag_ratios"] = [float(r) for r in mag_ratios]
    return InstalledMethod(name, config=info, before_run=before_run, step_callback=step_callback,
                           after_run=after_run, remove=lambda: _remove_all(transformer))


def _calibrate_mag_cache(model, steps, timestep, calibrate) -> list[float]:
    """MagCache needs per-model magnitude ratios: one run in diffusers' calibrate mode, which prints them."""
    import ast
    import contextlib
    import io

    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    transformer = model.transformer
    cfg = _diffusers_config("mag_cache", steps, timestep, None)
    try:
        _apply("mag_cache", transformer, cfg)
    except Exception as exc:
        _remove_all(transformer)
        raise MethodSkipped(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    buf = io.StringIO()
    try:
        _set_cache_context(transformer, CacheContext("calibration"))
        with contextlib.redirect_stdout(buf):
            calibrate()
    finally:
        _set_cache_context(transformer, None)
        _remove_all(transformer)
    lists = [line for line in buf.getvalue().splitlines() if line.startswith("[")]
    ratios = [float(r) for r in ast.literal_eval(lists[-1])] if lists else []
    if len(ratios) < 2:
        raise MethodSkipped(f"MagCache calibration produced {len(ratios)} ratios (needs one per step)")
    return ratios
