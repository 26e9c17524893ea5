"""`SpecDiffConfig`: every knob of SpecDiff, validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from foretell.core.errors import ForetellError

SCORE_MODES = ("product", "history", "future")
SCORE_NORMS = ("mean", "rank")
FEATURE_SOURCES = ("steps", "computed")
SCORE_BACKENDS = ("auto", "explicit", "sdpa", "triton")


@dataclass(frozen=True)
class SpecDiffConfig:
    """Configuration of SpecDiff (self-speculative multi-level token caching).

    cache_rate: fraction of image tokens NOT computed at a cached step, in [0, 1). 0 = no cache
        (the stock forward runs, bit for bit).
    speculative_steps: K, the number of steps of the speculative sampler run from the same noise,
        prompt and guidance before the main run (>= 1). Its first step is the main run's first step
        (same input, same timestep), so it costs K - 1 extra transformer calls.
    warmup_steps: the first main steps that run in full (>= 0; step 0 always runs in full).
    refresh_every: every this many steps after warm-up one step runs in full (0 = never).
    score: token importance: "product" = his * fut * exp(cf) (SpecDiff), "history" = his * exp(cf)
        (RAS/ToCa-like, no speculative pass), "future" = fut * exp(cf).
    reuse_mass: C2 = the lowest-score cached tokens making up this fraction of the total score mass.
    reuse / blend: switch the C2 (reuse last feature) / C3 (blend last 3 features) levels on or off.
        With one level off its tokens go to the other; with both off every cached token reuses.
    blend_history: how many past features C3 blends (the paper uses 3).
    max_cached_count: cf is clipped here before exp() so scores stay finite.
    cf_scale: the starvation term is exp(cf_scale * cf) (>= 0; 1 = the paper's exp(cf); 0 = off).
    score_norm: how his and fut are made comparable before the product: "mean" divides each by its
        mean over the tokens (mean 1); "rank" replaces each by its rank among the tokens scaled to
        (0, 2] (mean ~1, robust to a few tokens that take most of the attention).
    feature_source: what C2 reuses and C3 blends. "steps": every token's outputs at the last
        ``blend_history`` main steps (fresh, reused or blended), weighted by the main-step timesteps
        T_{t+i}, so the weights are the same for every token (0.47/0.34/0.19 for uniform steps).
        "computed": each token's last computed outputs, weighted by the timesteps they were made at.
    speculative_uncond: with CFG, the speculative steps also run the unconditional half (True, as the
        paper describes); False runs only the conditional half there (half the speculative cost; the
        first speculative Euler step still uses the guided velocity of the main run's first step).
    score_backend: how a scoring layer computes the attention each key received (the same quantity,
        to rounding). "explicit": materialise the softmax probabilities head-chunked (QK^T, softmax, sum,
        PV). "sdpa": output from one fused SDPA kernel that also returns each query's log-sum-exp,
        received from large chunks of one matmul, exp and sum (no PV, no softmax tensor). "triton":
        as "sdpa" with the second pass in one Triton kernel that stores no logits (CUDA, fp16/bf16;
        "sdpa" where unavailable). "auto": "explicit" on the CPU, "triton" on CUDA, "sdpa" elsewhere.
    score_layer_stride: only every this many attention layers (index 0, n, 2n, ...) score (>= 1;
        1 = all layers, the method as described). An approximation that cuts the scoring cost by n.
    """

    cache_rate: float = 0.8
    speculative_steps: int = 2
    warmup_steps: int = 4
    refresh_every: int = 0
    score: str = "product"
    reuse_mass: float = 0.10
    blend: bool = True
    reuse: bool = True
    blend_history: int = 3
    max_cached_count: int = 30
    cf_scale: float = 1.0
    score_norm: str = "rank"
    speculative_uncond: bool = False
    feature_source: str = "steps"
    score_backend: str = "auto"
    score_layer_stride: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):                 # bool flags are bools, counts are not bools
            value = getattr(self, f.name)
            if f.type in ("bool", bool) and not isinstance(value, bool):
                raise ForetellError(f"{f.name} must be True or False, got {value!r}")
            if f.type in ("int", "float", int, float) and isinstance(value, bool):
                raise ForetellError(f"{f.name} must be a number, got {value!r}")
        if not isinstance(self.cache_rate, (int, float)) or not 0.0 <= float(self.cache_rate) < 1.0:
            raise ForetellError(f"cache_rate must be a number in [0, 1), got {self.cache_rate!r}")
        if not isinstance(self.speculative_steps, int) or self.speculative_steps < 1:
            raise ForetellError(f"speculative_steps (K) must be an integer >= 1, got {self.speculative_steps!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ForetellError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ForetellError(f"refresh_every must be an integer >= 0 (0 = never), got {self.refresh_every!r}")
        if self.score not in SCORE_MODES:
            raise ForetellError(f"unknown score mode {self.score!r}; accepted: {', '.join(SCORE_MODES)}")
        if not isinstance(self.reuse_mass, (int, float)) or not 0.0 <= float(self.reuse_mass) < 1.0:
            raise ForetellError(f"reuse_mass must be a number in [0, 1), got {self.reuse_mass!r}")
        if not isinstance(self.blend_history, int) or self.blend_history < 1:
            raise ForetellError(f"blend_history must be an integer >= 1, got {self.blend_history!r}")
        if not isinstance(self.cf_scale, (int, float)) or not 0.0 <= float(self.cf_scale) <= 10.0:
            raise ForetellError(f"cf_scale must be a number in [0, 10], got {self.cf_scale!r}")
        if self.score_norm not in SCORE_NORMS:
            raise ForetellError(f"unknown score_norm {self.score_norm!r}; accepted: {', '.join(SCORE_NORMS)}")
        if self.feature_source not in FEATURE_SOURCES:
            raise ForetellError(
                f"unknown feature_source {self.feature_source!r}; accepted: {', '.join(FEATURE_SOURCES)}"
            )
        if self.score_backend not in SCORE_BACKENDS:
            raise ForetellError(
                f"unknown score_backend {self.score_backend!r}; accepted: {', '.join(SCORE_BACKENDS)}"
            )
        if isinstance(self.score_layer_stride, bool) or not isinstance(self.score_layer_stride, int) \
                or self.score_layer_stride < 1:
            raise ForetellError(f"score_layer_stride must be an integer >= 1, got {self.score_layer_stride!r}")
        if not isinstance(self.max_cached_count, int) or not 0 <= self.max_cached_count <= 80:
            raise ForetellError(f"max_cached_count must be an integer in [0, 80], got {self.max_cached_count!r}")

    @property
    def uses_history(self) -> bool:
        """Whether scores need the previous main step's attention."""
        return self.score in ("product", "history")

    @property
    def uses_future(self) -> bool:
        """Whether scores need the speculative pass."""
        return self.score in ("product", "future")

    def as_dict(self) -> dict:
        """Plain dict for reports."""
        return asdict(self)
