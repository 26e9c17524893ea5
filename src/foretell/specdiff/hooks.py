"""`SpecDiffHook`: the diffusers ModelHook that replaces the transformer's forward while applied.

Each call is placed on the sampler's schedule by its timestep. A call at the schedule's first
timestep starts a new run (all state reset). Full steps (warm-up, periodic refresh) compute every
token and fill the per-layer K/V caches; the run's first step also serves as speculative step 0, after
which the remaining K - 1 speculative steps run. Cached steps rank tokens by score, compute the top
(1 - cache_rate) (C1) and take the rest from the feature history (C2 reuse, C3 blend).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from diffusers.hooks import ModelHook

from foretell.core.errors import ForetellError
from foretell.specdiff.adapters import ModelAdapter
from foretell.specdiff.attention import AttentionContext
from foretell.specdiff.config import SpecDiffConfig
from foretell.specdiff.history import FeatureHistory
from foretell.specdiff.importance import TokenImportance
from foretell.specdiff.levels import LEVEL_NAMES, num_computed, select_levels
from foretell.specdiff.speculative import euler_next_input, guided_velocity, speculative_sigmas

HOOK_NAME = "foretell_specdiff"
_SIGMA_TOL = 1e-4


@dataclass
class RunState:
    """State of one sampling run (one pipeline call)."""

    start_step: int
    sigmas: list[float]
    num_tokens: int
    importance: TokenImportance
    history: FeatureHistory
    last_step: int = -1
    per_step: list[dict] = field(default_factory=list)


@dataclass
class Totals:
    """Counters over every run since apply() or reset_stats()."""

    runs: int = 0
    main_calls: int = 0
    full_calls: int = 0
    stock_calls: int = 0
    speculative_calls: int = 0
    computed_tokens: int = 0
    total_tokens: int = 0
    main_macs: int = 0
    full_macs: int = 0
    speculative_macs: int = 0
    stock_reasons: dict = field(default_factory=dict)


class SpecDiffHook(ModelHook):
    """Runs SpecDiff inside the hooked transformer's forward (``new_forward``)."""

    _is_stateful = True

    def __init__(
        self,
        config: SpecDiffConfig,
        adapter: ModelAdapter,
        context: AttentionContext,
        processors: list,
        scheduler_getter: Callable[[], Any],
        guidance_getter: Callable[[], float | None],
    ) -> None:
        super().__init__()
        self.config = config
        self.adapter = adapter
        self.context = context
        self.processors = processors
        self.scheduler_getter = scheduler_getter
        self.guidance_getter = guidance_getter
        self._signature = inspect.signature(type(adapter.model).forward)
        self.run: RunState | None = None
        self.totals = Totals()
        self.last_run_steps: list[dict] = []
        self._sigmas_src = None
        self._sigmas_host: torch.Tensor | None = None

    # --- ModelHook interface -----------------------------------------------------------------
    def reset_state(self, module=None):
        """Forget the current run; the next call starts a new one."""
        self.run = None
        self.context.mode = "off"
        for p in self.processors:
            p.reset_state()
        return module

    def cache_bytes(self) -> int:
        """Bytes held by the per-layer K/V caches and the feature history of the current run."""
        tensors = [t for p in self.processors for t in (p.k_cache, p.v_cache)]
        if self.run is not None:
            tensors += [self.run.history.features, self.run.history.sigmas]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def new_forward(self, module, *args, **kwargs):
        bound = self._signature.bind(module, *args, **kwargs)
        call = {k: v for k, v in bound.arguments.items() if k != "self"}
        return self.forward_call(call)

    # --- the method ----------------------------------------------------------------------------
    def _stock(self, call: dict, reason: str) -> Any:
        self.totals.stock_calls += 1
        self.totals.stock_reasons[reason] = self.totals.stock_reasons.get(reason, 0) + 1
        return self.fn_ref.original_forward(**call)

    def _locate(self, call: dict) -> tuple[int, float, float, Any] | None:
        """(step, sigma, timestep value, scheduler) of this call, or None when off the schedule."""
        scheduler = self.scheduler_getter()
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is None or len(sigmas) < 2:
            raise ForetellError("SpecDiff needs a FlowMatchEulerDiscreteScheduler after set_timesteps(n)")
        ntt = scheduler.config.num_train_timesteps
        timestep = torch.as_tensor(call["timestep"])
        value = float(timestep.flatten()[0])  # the one host read of a step
        sigma = self.adapter.timestep_to_sigma(value, ntt)
        schedule = self._host_sigmas(sigmas)
        diffs = (schedule[:-1] - sigma).abs()
        step = int(diffs.argmin())
        # FluxPipeline casts the timestep to the latents' dtype: in bfloat16 it is off by up to eps/2
        eps = torch.finfo(timestep.dtype).eps if timestep.is_floating_point() else 0.0
        if float(diffs[step]) > max(_SIGMA_TOL, eps * abs(sigma)):
            return None
        return step, float(schedule[step]), value, scheduler

    def _host_sigmas(self, sigmas) -> torch.Tensor:
        """The schedule as a float64 CPU tensor, copied once per ``set_timesteps`` (which builds a new
        tensor, on the pipeline's device), not at every call."""
        if self._sigmas_src is not sigmas:
            self._sigmas_src = sigmas
            self._sigmas_host = torch.as_tensor(sigmas).detach().double().cpu()
        return self._sigmas_host

    def _is_full(self, step: int) -> bool:
        rel = step - self.run.start_step
        cfg = self.config
        if rel < max(1, cfg.warmup_steps):
            return True
        after = rel - cfg.warmup_steps
        return cfg.refresh_every > 0 and after > 0 and after % cfg.refresh_every == 0

    def _needs_record(self, step: int) -> bool:
        cfg = self.config
        if step == self.run.start_step and cfg.uses_future:
            return True
        nxt = step + 1
        return cfg.uses_history and nxt < len(self.run.sigmas) - 1 and not self._is_full(nxt)

    def _start_run(self, step: int, scheduler, call: dict) -> None:
        n = self.adapter.num_image_tokens(call)
        device = call["hidden_states"].device
        for p in self.processors:
            p.reset_state()
        self.run = RunState(
            start_step=step,
            sigmas=self._host_sigmas(scheduler.sigmas).tolist(),
            num_tokens=n,
            importance=TokenImportance(self.config, n, device),
            history=FeatureHistory(self.config.blend_history),
        )
        self.last_run_steps = self.run.per_step
        self.totals.runs += 1

    def forward_call(self, call: dict) -> Any:
        if self.config.cache_rate == 0:
            return self._stock(call, "cache_rate=0")
        reason = self.adapter.unsupported_call(call)
        if reason is not None:
            return self._stock(call, reason)
        located = self._locate(call)
        if located is None:
            return self._stock(call, "timestep not on the scheduler's schedule")
        step, sigma, value, scheduler = located
        if step == 0 or self.run is None or step < self.run.last_step:
            self._start_run(step, scheduler, call)
        elif step == self.run.last_step:
            raise ForetellError(
                "SpecDiff: the transformer was called twice at the same timestep (e.g. FluxPipeline with "
                "true_cfg_scale > 1); batch CFG as [uncond, cond] in one call, or use guidance-distilled FLUX"
            )
        self.run.last_step = step
        try:
            tokens = self._main_step(call, step, sigma, value)
        finally:
            self.context.mode = "off"
            self.context.received = None
            self.context.idx = None
            self.context.rows.clear()
            self.context.rope = None
        output = self.adapter.to_output(tokens, call)
        if call.get("return_dict", True):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=output)
        return (output,)

    def _main_step(self, call: dict, step: int, sigma: float, value: float) -> torch.Tensor:
        run, ctx, cfg = self.run, self.context, self.config
        n = run.num_tokens
        batch = int(call["hidden_states"].shape[0])
        n_text = self.adapter.num_text_tokens(call)
        full = self._is_full(step)
        record = self._needs_record(step)
        ctx.record, ctx.received = record, None
        if full:
            ctx.mode, ctx.store_kv, ctx.idx = "full", True, None
            tokens = self.adapter.run(call, None, ctx)
            run.history.update(tokens, None, sigma)
            run.importance.mark_all_computed()
            counts = {"C1": n, "C2": 0, "C3": 0}
            n_query = n
        else:
            scores = run.importance.score(sigma)
            levels, idx = select_levels(
                scores, num_computed(n, cfg.cache_rate), cfg.reuse_mass, reuse=cfg.reuse, blend=cfg.blend
            )
            ctx.mode, ctx.store_kv, ctx.idx = "partial", False, idx
            ctx.rows.clear()
            computed = self.adapter.run(call, idx, ctx)
            tokens = run.history.assemble(levels, computed, idx, sigma)
            if cfg.feature_source == "steps":
                run.history.update(tokens, None, sigma)
            else:
                run.history.update(computed, idx, sigma)
            run.importance.update_counts(levels)
            counts = count_levels(levels)  # read on the host by level_counts(), not per step
            n_query = int(idx.numel())
        received = ctx.received
        if record and received is not None and cfg.uses_history:
            run.importance.set_history(received)
        macs = self.adapter.macs(batch, n_query, n, n_text)
        t = self.totals
        t.main_calls += 1
        t.full_calls += int(full)
        t.computed_tokens += n_query
        t.total_tokens += n
        t.main_macs += macs
        t.full_macs += self.adapter.macs(batch, n, n, n_text)
        run.per_step.append(
            {"step": step, "timestep": value, "sigma": sigma, "level_counts": counts, "full": full, "macs": macs}
        )
        if step == run.start_step and cfg.uses_future:
            run.importance.add_future(sigma, received)
            self._speculate(call, tokens, batch, n_text)
        return tokens

    def _speculate(self, call: dict, tokens: torch.Tensor, batch: int, n_text: int) -> None:
        """Speculative steps 1..K-1 (step 0 is the main run's first step), recording attention."""
        run, ctx = self.run, self.context
        spec = speculative_sigmas(run.sigmas[run.start_step :], self.config.speculative_steps)
        guidance = self.guidance_getter()
        cfg_on = guidance is not None and guidance > 1.0
        cond_only = cfg_on and not self.config.speculative_uncond
        ntt = self.scheduler_getter().config.num_train_timesteps
        base = _cond_half(call, batch) if cond_only else call
        x = call["hidden_states"]
        velocity = self.adapter.to_output(tokens, call)
        for k in range(1, len(spec) - 1):
            if cond_only:
                v = guided_velocity(velocity, guidance) if k == 1 else velocity
                x_prev = x.chunk(2)[0] if k == 1 else x
                x = (x_prev.float() + (spec[k] - spec[k - 1]) * v.float()).to(x_prev.dtype)
            else:
                x = euler_next_input(x, velocity, spec[k - 1], spec[k], guidance)
            spec_call = dict(base)
            spec_call["hidden_states"] = x
            spec_call["timestep"] = self.adapter.sigma_to_timestep(spec[k], torch.as_tensor(base["timestep"]), ntt)
            ctx.mode, ctx.store_kv, ctx.record, ctx.received, ctx.idx = "full", False, True, None, None
            spec_tokens = self.adapter.run(spec_call, None, ctx)
            run.importance.add_future(spec[k], ctx.received)
            velocity = self.adapter.to_output(spec_tokens, spec_call)
            self.totals.speculative_calls += 1
            rows = int(x.shape[0])
            self.totals.speculative_macs += self.adapter.macs(rows, run.num_tokens, run.num_tokens, n_text)


def count_levels(levels: torch.Tensor) -> torch.Tensor:
    """Tokens per level (3,) as a tensor on the levels' device: ``bincount(levels, minlength=3)``
    without its host read of ``levels.max()`` (a GPU sync at every cached step)."""
    ones = torch.ones_like(levels)
    return torch.zeros(len(LEVEL_NAMES), dtype=levels.dtype, device=levels.device).scatter_add_(0, levels, ones)


def level_counts(counts) -> dict:
    """A per-step ``level_counts`` entry as ``{"C1": int, "C2": int, "C3": int}`` (cached steps keep the
    counts as a device tensor so the step does not wait for the GPU)."""
    if isinstance(counts, dict):
        return dict(counts)
    return {name: int(c) for name, c in zip(LEVEL_NAMES, counts.tolist())}


def _cond_half(call: dict, rows: int) -> dict:
    """The conditional half of a [uncond, cond] CFG call (every tensor with ``rows`` leading rows)."""
    out = {}
    for key, value in call.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == rows and key not in ("img_ids", "txt_ids"):
            value = value[rows // 2 :]
        out[key] = value
    return out
