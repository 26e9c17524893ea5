"""`apply()` switches SpecDiff on for a pipeline or transformer; the `SpecDiffHandle` it returns
reports statistics and removes it again (restoring the stock processors and forward exactly)."""

from __future__ import annotations

from typing import Any

from torch import nn

from foretell.core.errors import ForetellError
from foretell.specdiff.adapters import SUPPORTED, adapter_for
from foretell.specdiff.attention import AttentionContext
from foretell.specdiff.config import SpecDiffConfig
from foretell.specdiff.hooks import HOOK_NAME, SpecDiffHook, level_counts


class SpecDiffHandle:
    """An applied SpecDiff: ``stats()``, ``reset_state()``, ``remove()``; also a context manager."""

    def __init__(self, transformer: nn.Module, hook: SpecDiffHook, originals: list, pipeline: Any, state: dict) -> None:
        self.transformer = transformer
        self.pipeline = pipeline
        self._hook = hook
        self._originals = originals
        self._state_before = state
        self._removed = False

    @property
    def config(self) -> SpecDiffConfig:
        """The configuration in force."""
        return self._hook.config

    def reset_state(self) -> None:
        """Forget the current run: the next transformer call starts a new one."""
        self._hook.reset_state()

    def reset_stats(self) -> None:
        """Zero the counters that ``stats()`` reports."""
        from foretell.specdiff.hooks import Totals

        self._hook.totals = Totals()
        self._hook.last_run_steps = []
        self._hook.context.backends_used.clear()

    def stats(self) -> dict:
        """Counters over every call since apply()/reset_stats(); ``per_step`` is the latest run's.

        computed_token_fraction: image tokens computed / image tokens, over main-run calls.
        macs_fraction: (main-run MACs + speculative MACs) / MACs of the same calls without cache.
        speculative_macs_fraction: speculative MACs / (main-run MACs + speculative MACs).
        cache_bytes: memory now held by the per-layer K/V caches and the feature history.
        score_backends: scored layer calls per backend that ran ("explicit", "sdpa", "triton").
        """
        t = self._hook.totals
        spent = t.main_macs + t.speculative_macs
        return {
            "config": self.config.as_dict(),
            "runs": t.runs,
            "calls": t.main_calls + t.stock_calls,
            "full_calls": t.full_calls,
            "stock_calls": t.stock_calls,
            "stock_reasons": dict(t.stock_reasons),
            "speculative_calls": t.speculative_calls,
            "computed_token_fraction": t.computed_tokens / t.total_tokens if t.total_tokens else 1.0,
            "macs_fraction": spent / t.full_macs if t.full_macs else 1.0,
            "speculative_macs_fraction": t.speculative_macs / spent if spent else 0.0,
            "macs": spent,
            "full_macs": t.full_macs,
            "cache_bytes": self._hook.cache_bytes(),
            "score_backends": dict(self._hook.context.backends_used),
            "per_step": [dict(s, level_counts=level_counts(s["level_counts"])) for s in self._hook.last_run_steps],
        }

    def remove(self) -> None:
        """Restore the stock attention processors and forward; idempotent."""
        if self._removed:
            return
        from diffusers.hooks import HookRegistry

        module = self.transformer
        registry = HookRegistry.check_if_exists_or_initialize(module)
        registry.remove_hook(HOOK_NAME, recurse=False)
        for attn, original in self._originals:
            attn.set_processor(original)
        if not registry.hooks:
            if not self._state_before["had_forward_attr"]:
                module.__dict__.pop("forward", None)
            if not self._state_before["had_registry"]:
                del module._diffusers_hook
        self._removed = True

    def __enter__(self) -> "SpecDiffHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _split(pipe_or_transformer: Any) -> tuple[nn.Module, Any]:
    transformer = getattr(pipe_or_transformer, "transformer", None)
    if isinstance(transformer, nn.Module) and not isinstance(pipe_or_transformer, nn.Module):
        return transformer, pipe_or_transformer
    if isinstance(pipe_or_transformer, nn.Module):
        return pipe_or_transformer, None
    raise ForetellError(f"unsupported model {type(pipe_or_transformer).__name__}; supported: {SUPPORTED}")


def apply(
    pipe_or_transformer: Any,
    config: SpecDiffConfig | None = None,
    *,
    scheduler: Any = None,
    guidance_scale: float | None = None,
) -> SpecDiffHandle:
    """Switch SpecDiff on for a StableDiffusion3/Flux pipeline or a bare SD3/FLUX transformer.

    Pipeline: the scheduler and the CFG scale are read from the pipeline at each call.
    Bare transformer (hand-written loop): pass the FlowMatchEulerDiscreteScheduler you step with
    (``set_timesteps`` is read at the run's first call) and the CFG scale (None or 1 = no CFG; with
    CFG the batch is [uncond, cond]).
    """
    from diffusers.hooks import HookRegistry

    config = config if config is not None else SpecDiffConfig()
    if not isinstance(config, SpecDiffConfig):
        raise ForetellError(f"config must be a SpecDiffConfig, got {type(config).__name__}")
    transformer, pipeline = _split(pipe_or_transformer)
    adapter = adapter_for(transformer)
    existing = getattr(transformer, "_diffusers_hook", None)
    if existing is not None and existing.get_hook(HOOK_NAME) is not None:
        raise ForetellError("SpecDiff is already applied to this transformer; call handle.remove() first")
    adapter.check_processors()
    if scheduler is None and pipeline is not None:
        scheduler = getattr(pipeline, "scheduler", None)
    if scheduler is None:
        raise ForetellError("a bare transformer needs scheduler=<the FlowMatchEulerDiscreteScheduler the loop steps with>")
    import math

    from foretell.core.checks import in_interval, is_real

    if guidance_scale is not None and not (is_real(guidance_scale) and in_interval(guidance_scale, 0.0, math.inf)):
        raise ForetellError(f"guidance_scale must be a finite number >= 0 (None or 1 = no CFG), got {guidance_scale!r}")

    def guidance_getter() -> float | None:
        if guidance_scale is not None or pipeline is None:
            return guidance_scale
        if getattr(pipeline, "do_classifier_free_guidance", False):
            return float(pipeline.guidance_scale)
        return None

    if pipeline is not None:

        def scheduler_getter():
            return pipeline.scheduler

    else:

        def scheduler_getter():
            return scheduler

    state = {"had_forward_attr": "forward" in transformer.__dict__, "had_registry": hasattr(transformer, "_diffusers_hook")}
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    context = AttentionContext(backend=config.score_backend, layer_stride=config.score_layer_stride)
    originals, processors = [], []
    for index, (_, attn) in enumerate(adapter.attention_modules()):
        proc = adapter.processor_cls(attn.processor, context, index)
        originals.append((attn, attn.processor))
        processors.append(proc)
        attn.set_processor(proc)
    hook = SpecDiffHook(config, adapter, context, processors, scheduler_getter, guidance_getter)
    registry.register_hook(hook, HOOK_NAME)
    return SpecDiffHandle(transformer, hook, originals, pipeline, state)
