"""Exit rules, called by :class:`~foretell.specee.kv.LayerStepper` after each layer.

A rule sees the new tokens' hidden states after a layer and returns an :class:`ExitDecision`
(the exiting rows' greedy tokens and/or full-vocabulary logits) or None. ``SpecEERule`` is the paper's rule;
the others are the peers of the benchmark (full-vocabulary predictor, AdaInfer gap, fixed layer).
Each rule has explicit per-token state and ``start_token``/``reset_state``.
"""

from __future__ import annotations

import torch

from foretell.specee.adapters import DecoderAccess
from foretell.specee.features import (candidate_logits, full_vocab_features, layer_features,
                                      top2_prob_gap)
from foretell.specee.predictor import LayerPredictors
from foretell.specee.scheduler import LayerSchedule


class ExitDecision:
    """Exit after ``layer`` for the rows that exit (all new tokens, or a leading run of a block).

    Carries either the rows' full-vocabulary ``logits`` (rows, V), or their exact greedy tokens
    ``top`` (rows,) plus the normalised ``states`` and the LM head to compute the logits only when
    someone needs the distribution (sampling, perplexity): a greedy exit then never pays the
    full-vocabulary product.
    """

    def __init__(self, layer: int, logits: torch.Tensor | None = None, *, top: torch.Tensor | None = None,
                 states: torch.Tensor | None = None, lm_head=None):
        if logits is None and (top is None or states is None or lm_head is None):
            raise ValueError("ExitDecision needs logits, or top + states + lm_head")
        self.layer, self._logits, self.top, self.states, self.lm_head = layer, logits, top, states, lm_head

    @property
    def logits(self) -> torch.Tensor:
        """Full-vocabulary logits (rows, V) of the exiting rows (computed on first use)."""
        if self._logits is None:
            self._logits = self.lm_head(self.states)
        return self._logits

    def argmax(self) -> torch.Tensor:
        """Greedy token (rows,) of each exiting row."""
        return self.top if self.top is not None else self.logits.argmax(-1)

    def __bool__(self) -> bool:
        return True


def row_logits(scores) -> torch.Tensor:
    """The last row's logits (V,) of a pass result: a logits tensor (V,) or an :class:`ExitDecision`."""
    return scores.logits[-1] if isinstance(scores, ExitDecision) else scores


class ExitRule:
    """Base: never exits (the full model)."""

    name = "full"

    def __init__(self, acc: DecoderAccess, schedule: LayerSchedule | None = None):
        self.acc, self.schedule = acc, schedule
        self.evaluations = 0         # predictor / rule evaluations
        self.head_checks = 0         # full-vocabulary LM-head products spent on checks

    def reset_state(self) -> None:
        if self.schedule is not None:
            self.schedule.reset_state()
        self.evaluations = self.head_checks = 0

    def start_token(self, cands: torch.Tensor | None) -> None:
        """Called before each target pass with the draft candidates (q, k) or None."""
        self._active = self.schedule.active() if self.schedule is not None else frozenset()

    def record(self, layer: int) -> None:
        if self.schedule is not None:
            self.schedule.record_exit(layer)

    def __call__(self, layer: int, h: torch.Tensor):
        return None


class SpecEERule(ExitRule):
    """Predictor score > the layer's threshold AND the layer's full-vocab argmax is one of the k
    candidates.

    ``threshold``: one number for every layer (the paper: 0.5), or None for the per-layer
    thresholds calibrated into the predictors' config (0.5 where a layer has none). A layer that
    calibration disabled (threshold >= 1: sigmoid <= 1 never fires) is not even evaluated; an
    explicit 1.0 still evaluates every predictor (it measures their overhead, equals the full model).
    ``screen``: check the candidate condition with :class:`~foretell.specee.screen.LMHeadScreen`
    (exact, no full-vocabulary product) where it pays, i.e. for an LM head on the CPU; on a GPU
    (and with False) the full product decides (one GEMV there, no per-row host syncs).

    Host syncs: one per evaluated (scheduled, enabled) layer to read "does every row fire", and
    one more when it does (the candidate check); other layers cost none.
    """

    name = "specee"

    def __init__(self, acc, schedule, predictors: LayerPredictors, threshold: float | None = 0.5,
                 screen: bool = True):
        super().__init__(acc, schedule)
        self.predictors = predictors
        self.threshold = None if threshold is None else float(threshold)
        self.thresholds = predictors.thresholds_for(self.threshold)
        self.disabled = frozenset(l for l, t in self.thresholds.items() if t >= 1.0) if threshold is None \
            else frozenset()
        self.screen = lm_head_screen(acc) if screen else None

    def start_token(self, cands):
        super().start_token(cands)
        self.cands = cands                                    # (q, k) target ids
        self.rows = self.acc.lm_head.weight[cands].float()    # (q, k, d) mini head (features are float32)
        act = frozenset(i for i in self._active if self.predictors.has(i) and i not in self.disabled)
        self._scored = act
        self._mini = act | frozenset(i - 1 for i in act if i > 0)
        self.prev, self._prev_layer = None, None

    def _confident(self, layer, h):
        """Normalised states and per-row "predictor fires" flags at ``layer`` (None: not evaluated).

        The mini head runs on each scheduled layer and on the layer just below it, so the "change
        since the previous layer" feature is the one of training (layer i-1); all other layers
        cost nothing.
        """
        if layer not in self._mini:
            return None
        x = self.acc.norm(h)
        prev = self.prev if self._prev_layer == layer - 1 else None    # None only at layer 0
        cand = candidate_logits(x, self.rows)
        if layer not in self._scored:
            self.prev, self._prev_layer = torch.softmax(cand.float(), dim=-1), layer
            return None
        feats, self.prev = layer_features(cand, prev)
        self._prev_layer = layer
        self.evaluations += 1
        return x, self.predictors.score(layer, feats) > self.thresholds[layer]

    def candidate_argmax(self, x: torch.Tensor, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(ok (q,), top (q,), full logits or None): is each row's full-vocab argmax among its
        candidates, and which token it is. Counts one head check."""
        self.head_checks += 1
        if self.screen is not None:
            ok, top = self.screen.argmax_among(x, cands)
            return ok, top, None
        logits = self.acc.logits(x)
        top = logits.argmax(-1)
        return (top.unsqueeze(-1) == cands).any(-1), top, logits

    def __call__(self, layer, h):
        evaluated = self._confident(layer, h)
        if evaluated is None:
            return None
        x, conf = evaluated
        if not bool(conf.all()):
            return None
        ok, top, logits = self.candidate_argmax(x, self.cands)
        if not bool(ok.all()):
            return None
        return ExitDecision(layer, logits, top=top, states=x, lm_head=self.acc.logits)


def lm_head_screen(acc: DecoderAccess):
    """One :class:`LMHeadScreen` per LM head (built once and kept on the module, shared by all
    rules, rebuilt if the weight is replaced or changed in place); None when the head has a bias
    (the bound covers ``W h`` only) or is not on the CPU (the screen saves memory traffic of a
    CPU GEMV; on a GPU the full product is one fast kernel, the screen's per-row loop would sync)."""
    from foretell.specee.screen import LMHeadScreen

    head = acc.lm_head
    if getattr(head, "bias", None) is not None or head.weight.device.type != "cpu":
        return None
    w = head.weight
    key = (w.data_ptr(), tuple(w.shape), w._version)
    cached = head.__dict__.get("_foretell_screen")
    if cached is None or cached[0] != key:
        cached = (key, LMHeadScreen(w))
        head.__dict__["_foretell_screen"] = cached
    return cached[1]


class FullVocabRule(ExitRule):
    """Peer: predictor on full-vocabulary logit features (the paper's costly baseline)."""

    name = "full_vocab_predictor"

    def __init__(self, acc, schedule, predictors: LayerPredictors, threshold: float | None = 0.5):
        super().__init__(acc, schedule)
        self.predictors = predictors
        self.threshold = None if threshold is None else float(threshold)   # None: calibrated per layer
        self.thresholds = predictors.thresholds_for(self.threshold)

    def __call__(self, layer, h):
        if layer not in self._active or not self.predictors.has(layer) or self.thresholds[layer] >= 1.0:
            return None
        self.evaluations += 1
        self.head_checks += 1
        logits = self.acc.logits(self.acc.norm(h))
        if bool((self.predictors.score(layer, full_vocab_features(logits)) > self.thresholds[layer]).all()):
            return ExitDecision(layer, logits)
        return None


class GapRule(ExitRule):
    """Peer (AdaInfer-style): exit when the top-1 minus top-2 probability gap exceeds ``gap``."""

    name = "adainfer"

    def __init__(self, acc, schedule, gap: float):
        super().__init__(acc, schedule)
        self.gap = float(gap)

    def __call__(self, layer, h):
        if layer not in self._active:
            return None
        self.evaluations += 1
        self.head_checks += 1
        logits = self.acc.logits(self.acc.norm(h))
        if bool((top2_prob_gap(logits) > self.gap).all()):
            return ExitDecision(layer, logits)
        return None


class FixedLayerRule(ExitRule):
    """Peer: always exit after a fixed layer (uses ``layers`` layers)."""

    def __init__(self, acc, layers: int):
        super().__init__(acc, None)
        self.exit_after = int(layers) - 1
        self.name = f"fixed_layer_{int(layers)}"

    def __call__(self, layer, h):
        if layer == self.exit_after:
            return ExitDecision(layer, self.acc.logits(self.acc.norm(h)))
        return None
