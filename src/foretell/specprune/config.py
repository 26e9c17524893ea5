"""``SpecPruneConfig``: every knob of SpecPrune-VLA in one dataclass.

Token counts of the paper are for 256 patches per view (OpenVLA-OFT at 224 px, patch 14). Here they
are stored as *fractions of the patches per view* and scaled to the model at hand, e.g. the static
cap 200/256 and the layer-0 top-k 16/256 (third-person) and 12/256 (wrist) in coarse mode.
Per-view tuples are matched to the adapter's views in order (the last entry repeats for extra views).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from foretell.core.errors import ForetellError


GRAPH_KEPT_MULTIPLE = 16  # kept_multiple when CUDA graphs are on and the config leaves it to the engine


@dataclass
class SpecPruneConfig:
    """Configuration of the SpecPrune-VLA engine (see docs/specprune.md for the rules)."""

    enabled: bool = True  # False: the handle runs the exact unpruned computation (timing bookkeeping only)
    # --- local, frame difference
    use_frame_diff: bool = True
    similarity_threshold: float = 0.986  # cosine of raw RGB patches, current vs T frames back
    static_cap_coarse: float = 200 / 256  # at most this fraction of a view's patches is "static" (prunable)
    static_cap_fine: float = 180 / 256  # fine mode prunes fewer static patches (issue); the released code uses 220/256
    frame_gap_min: int = 2
    frame_gap_max: int = 6
    speed_scale: float = 1.0  # multiplies the xyz speed before the official T formula (unit conversion)
    # --- local, attention
    topk_coarse: tuple = (16 / 256, 12 / 256)  # per view, fraction of patches
    topk_fine: tuple = (25 / 256, 19 / 256)
    layer0_multiplier: int = 3  # layer 0 keeps the top (multiplier * k) per view
    rescore_layer1: bool = True  # second scoring after layer 1 (kept: dynamic U top-k U first k of layer 0 U global)
    instruction_skip: int = 0  # leading template tokens of the instruction not used as attention queries
    # --- global
    use_global: bool = True  # top-k of the previous query's last-layer instruction->vision attention
    global_topk: tuple = (16 / 256, 12 / 256)
    # --- dynamic layer pruning
    use_dynamic_layers: bool = True
    importance_layers: tuple | None = None  # None: official {0, 1, 12} of 32 layers, scaled to the depth
    drop_layers: tuple | None = None  # None: official {5, 10, 15, 20, 25} of 32, scaled, after the static stage; these layers see the reduced set
    drop_keep_fraction: float = 0.8  # keep this fraction of the visual tokens at each drop layer
    drop_floor: float = 60 / 512  # never fewer visual tokens than this fraction of all visual tokens
    importance_alpha: float = 0.2  # EMA weight of the newest rank weights
    # --- controller
    use_controller: bool = True
    controller_start_step: int = 10
    enter_speed: float = 0.4  # enter fine if |a_xyz| < enter_speed ...
    enter_xy: float = 0.1  # ... or (|a_xy| < enter_xy and a_z < enter_z and |a_rot| < enter_rot)
    enter_z: float = 0.1
    enter_rot: float = 0.2
    exit_z: float = 0.2  # exit fine if a_z > exit_z ...
    exit_rot: float = 0.3  # ... or (|a_rot| > exit_rot and the action queue is empty)
    requery_on_fine: bool = True
    # --- optional hard cap on the visual tokens kept after static pruning (None: adaptive)
    token_budget: int | None = None
    # --- engine: replay runs of plain layers from CUDA graphs (GPU only; graphs.py says why)
    cuda_graphs: bool = False
    # round the kept visual tokens of the static stage up to a multiple of this (adding the next best
    # scored patches), so that graphs keyed by the row count come back in a closed loop; None: 16 when
    # CUDA graphs are on, else 1 (no rounding)
    kept_multiple: int | None = None

    def replace(self, **changes) -> "SpecPruneConfig":
        """A copy with ``changes`` applied (validated; unknown field names raise ForetellError)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ForetellError(f"unknown SpecPruneConfig field(s) {bad}; accepted: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    def with_changes(self, changes: dict | str | None) -> "SpecPruneConfig":
        """A copy with ``changes`` (a dict, or its JSON text as given on a command line) applied;
        unknown field names raise ForetellError."""
        if changes is None or changes == "":
            return self
        if isinstance(changes, str):
            import json

            try:
                changes = json.loads(changes)
            except json.JSONDecodeError as exc:
                raise ForetellError(f"SpecPrune config changes must be a JSON object like '{{\"token_budget\": 80}}': {exc}") from None
        if not isinstance(changes, dict):
            raise ForetellError("SpecPrune config changes must be a JSON object (field name -> value)")
        return self.replace(**changes)

    def _check_types(self) -> None:
        """Each field holds its annotated kind (a JSON ``"false"`` is not a bool, 1.5 tokens not a count)."""
        import math
        import numbers

        from foretell.core.checks import is_int as integer
        from foretell.core.checks import is_real

        def number(v):  # numpy scalars register as numbers too; NaN and inf are not settings
            return is_real(v) and math.isfinite(v)

        kinds = {"bool": (lambda v: isinstance(v, bool), "true or false"),
                 "float": (number, "a finite number"),
                 "int": (integer, "an integer"),
                 "tuple": (lambda v: isinstance(v, (list, tuple)) and all(number(x) for x in v), "a list of finite numbers")}
        for name in ("importance_layers", "drop_layers"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (list, tuple)) and all(integer(x) for x in value)):
                raise ForetellError(f"{name}={value!r} must be a list of layer indices (integers) or null")
        for f in dataclasses.fields(self):
            kind, optional = str(f.type).split(" | ")[0], "None" in str(f.type)
            value = getattr(self, f.name)
            if kind == "tuple" and hasattr(value, "tolist"):  # a numpy array or tensor
                value = value.tolist()
                setattr(self, f.name, value)
            elif kind in ("int", "float") and number(value) and type(value) not in (int, float):  # numpy scalar
                value = int(value) if isinstance(value, numbers.Integral) else float(value)
                setattr(self, f.name, value)
            if kind in kinds and not (optional and value is None) and not kinds[kind][0](value):
                raise ForetellError(f"{f.name}={value!r} must be {kinds[kind][1]}{' or null' if optional else ''}")

    def __post_init__(self):
        self._check_types()
        self.topk_coarse, self.topk_fine, self.global_topk = tuple(self.topk_coarse), tuple(self.topk_fine), tuple(self.global_topk)
        if self.importance_layers is not None:
            self.importance_layers = tuple(int(i) for i in self.importance_layers)
        if self.drop_layers is not None:
            self.drop_layers = tuple(int(i) for i in self.drop_layers)
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ForetellError(f"similarity_threshold={self.similarity_threshold} must be in (0, 1]")
        for name in ("static_cap_coarse", "static_cap_fine", "drop_keep_fraction", "drop_floor", "importance_alpha"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ForetellError(f"{name}={v} must be a fraction in [0, 1]")
        if self.drop_keep_fraction == 0.0:
            raise ForetellError("drop_keep_fraction=0 would keep zero visual tokens; use a value in (0, 1]")
        for name in ("topk_coarse", "topk_fine", "global_topk"):
            vals = getattr(self, name)
            if not vals or any((not isinstance(v, (int, float))) or v < 0 or v > 1 for v in vals):
                raise ForetellError(f"{name}={vals} must be a non-empty tuple of fractions in [0, 1], one per view")
        if self.enabled and self.use_frame_diff is False and all(v == 0 for v in self.topk_coarse) and not self.use_global and self.token_budget is None:
            raise ForetellError("this config keeps zero visual tokens (no frame difference, top-k 0, no global set); raise topk_coarse or enable use_frame_diff")
        if self.enabled and all(v == 0 for v in self.topk_coarse) and self.static_cap_coarse >= 1.0 and not self.use_global:
            raise ForetellError("this config can keep zero visual tokens (static cap 1.0 and top-k 0); lower static_cap_coarse or raise topk_coarse")
        if not 1 <= self.frame_gap_min <= self.frame_gap_max:
            raise ForetellError(f"frame gap range [{self.frame_gap_min}, {self.frame_gap_max}] must satisfy 1 <= min <= max")
        if self.layer0_multiplier < 1:
            raise ForetellError(f"layer0_multiplier={self.layer0_multiplier} must be >= 1")
        if self.token_budget is not None and int(self.token_budget) < 1:
            raise ForetellError(f"token_budget={self.token_budget} keeps zero visual tokens; pass a positive number or None")
        if self.instruction_skip < 0:
            raise ForetellError("instruction_skip must be >= 0")
        if self.speed_scale <= 0:
            raise ForetellError(f"speed_scale={self.speed_scale} must be > 0 (it scales the arm's speed)")
        for name in ("enter_speed", "enter_xy", "enter_rot", "exit_rot"):
            if getattr(self, name) < 0:
                raise ForetellError(f"{name}={getattr(self, name)} must be >= 0 (it is compared with a speed's magnitude)")
        if self.controller_start_step < 0:
            raise ForetellError(f"controller_start_step={self.controller_start_step} must be >= 0")
        if self.kept_multiple is not None and self.kept_multiple < 1:
            raise ForetellError(f"kept_multiple={self.kept_multiple!r} must be a positive integer or None")

    def for_graphs(self, cuda_graphs) -> "SpecPruneConfig":
        """This config with ``kept_multiple`` resolved for an engine with (truthy) or without CUDA graphs."""
        if self.kept_multiple is not None:
            return self
        return self.replace(kept_multiple=GRAPH_KEPT_MULTIPLE if cuda_graphs else 1)

    def resolve_layers(self, num_layers: int) -> tuple[tuple, tuple]:
        """(importance_layers, drop_layers) for a backbone of ``num_layers`` layers."""
        imp = self.importance_layers
        if imp is None:
            imp = tuple(sorted({0, 1, min(num_layers - 1, round(12 / 32 * num_layers))}))
        drop = self.drop_layers
        if drop is None:  # after the static stage (layers 0 and 1)
            drop = tuple(sorted({round(f / 32 * num_layers) for f in (5, 10, 15, 20, 25)} & set(range(self._first_drop(), num_layers))))
        return imp, drop

    def _first_drop(self) -> int:
        return 3 if self.rescore_layer1 else 2

    def check_model(self, num_layers: int, patches_per_view: int, num_views: int) -> None:
        """Raise ForetellError if the layer indices or the budget do not fit the model."""
        if not self.enabled:
            return
        imp, drop = self.resolve_layers(num_layers)
        first = self._first_drop()
        bad = [i for i in imp if not 0 <= i < num_layers] + [i for i in drop if not first <= i < num_layers]
        if self.use_dynamic_layers and bad:
            raise ForetellError(f"importance/drop layers {bad} out of range for a {num_layers}-layer backbone; importance layers in [0, {num_layers - 1}], drop layers in [{first}, {num_layers - 1}] (after the static stage)")
        if self.enabled and num_layers < 2:
            raise ForetellError("SpecPrune needs a backbone with at least 2 layers (scoring after layers 0 and 1)")
        if self.token_budget is not None and self.token_budget > patches_per_view * num_views:
            raise ForetellError(f"token_budget={self.token_budget} exceeds the {patches_per_view * num_views} visual tokens of the model")


def per_view(values: tuple, view_index: int, patches_per_view: int) -> int:
    """Scale a per-view fraction to a token count (at least 1 when the fraction is positive)."""
    frac = values[min(view_index, len(values) - 1)]
    if frac <= 0:
        return 0
    return max(1, min(patches_per_view, int(round(frac * patches_per_view))))


def frame_gap(speed: float, cfg: SpecPruneConfig) -> int:
    """Official frame gap: T = clip(int(-16/3 * v/6 + 22/3) + 3, min, max); shorter when moving fast."""
    v = float(speed) * cfg.speed_scale
    t = int(-16.0 / 3.0 * v / 6.0 + 22.0 / 3.0)  # int() truncates toward zero, as in the released code
    return int(min(max(t + 3, cfg.frame_gap_min), cfg.frame_gap_max))
