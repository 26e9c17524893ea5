"""Exit rules, called by :class:`~foretell.specee.kv.LayerStepper` after each layer.

A rule sees the new tokens' hidden states after a layer and returns an :class:`ExitDecision`
(full-vocabulary logits of the exiting rows) or None. ``SpecEERule`` is the paper's rule;
the others are the peers of the benchmark (full-vocabulary predictor, AdaInfer gap, fixed layer).
Each rule has explicit per-token state and ``start_token``/``reset_state``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foretell.specee.adapters import DecoderAccess
from foretell.specee.features import (candidate_logits, full_vocab_features, layer_features,
                                      top2_prob_gap)
from foretell.specee.predictor import LayerPredictors
from foretell.specee.scheduler import LayerSchedule


@dataclass
class ExitDecision:
    """Exit after ``layer`` with ``logits`` (rows, V) of the rows that exit (all new tokens)."""

    layer: int
    logits: torch.Tensor

    def __bool__(self) -> bool:
        return True


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
    """Predictor score > threshold AND the layer's full-vocab argmax is one of the k candidates."""

    name = "specee"

    def __init__(self, acc, schedule, predictors: LayerPredictors, threshold: float = 0.5):
        super().__init__(acc, schedule)
        self.predictors, self.threshold = predictors, float(threshold)

    def start_token(self, cands):
        super().start_token(cands)
        self.cands = cands                                    # (q, k) target ids
        self.rows = self.acc.lm_head.weight[cands]            # (q, k, d) mini head
        act = frozenset(i for i in self._active if self.predictors.has(i))
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
        return x, self.predictors.score(layer, feats) > self.threshold

    def __call__(self, layer, h):
        evaluated = self._confident(layer, h)
        if evaluated is None:
            return None
        x, conf = evaluated
        if not bool(conf.all()):
            return None
        self.head_checks += 1
        logits = self.acc.logits(x)
        top = logits.argmax(-1, keepdim=True)
        if not bool((top == self.cands).any(-1).all()):
            return None
        return ExitDecision(layer, logits)


class FullVocabRule(ExitRule):
    """Peer: predictor on full-vocabulary logit features (the paper's costly baseline)."""

    name = "full_vocab_predictor"

    def __init__(self, acc, schedule, predictors: LayerPredictors, threshold: float = 0.5):
        super().__init__(acc, schedule)
        self.predictors, self.threshold = predictors, float(threshold)

    def __call__(self, layer, h):
        if layer not in self._active or not self.predictors.has(layer):
            return None
        self.evaluations += 1
        self.head_checks += 1
        logits = self.acc.logits(self.acc.norm(h))
        if bool((self.predictors.score(layer, full_vocab_features(logits)) > self.threshold).all()):
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
