"""Which layers run the exit predictor: an offline set from calibration data plus an online window.

Offline: the layers where oracle exits (earliest layer whose argmax equals the final token)
concentrate on calibration generations, chosen from the data. Online: the layers around the last
few exit layers of THIS sequence (contextual similarity); the history is reset per sequence
(the official code shared it across prompts).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import torch


def oracle_exit_layers(layer_argmax: torch.Tensor) -> torch.Tensor:
    """Earliest layer index (L, T) -> (T,) whose argmax equals the last layer's argmax."""
    hits = layer_argmax == layer_argmax[-1:]
    return hits.int().argmax(0)          # first True (last layer always True)


def choose_offline_layers(oracle: torch.Tensor, num_layers: int, *, coverage: float = 0.9,
                          max_layers: int = 8) -> list[int]:
    """Most frequent oracle exit layers (excluding the last) until ``coverage`` of the exitable
    tokens is reached, at most ``max_layers`` of them."""
    counts = Counter(int(x) for x in oracle.tolist() if int(x) < num_layers - 1)
    total = sum(counts.values())
    chosen, covered = [], 0
    for layer, c in counts.most_common():
        if len(chosen) >= max_layers or (total and covered / total >= coverage):
            break
        chosen.append(layer)
        covered += c
    return sorted(chosen)


@dataclass
class LayerSchedule:
    """Offline layers plus +-``radius`` around the last ``window`` exits of the current sequence."""

    offline: list[int]
    num_layers: int
    window: int = 5
    radius: int = 2
    online: bool = True

    def __post_init__(self):
        self.reset_state()

    def reset_state(self) -> None:
        """Forget this sequence's exit history (call at the start of each sequence)."""
        self.recent: deque = deque(maxlen=self.window)
        self._active = frozenset(self.offline)

    def record_exit(self, layer: int) -> None:
        """Remember an exit layer of this sequence (the final layer counts as no exit)."""
        if not self.online or layer >= self.num_layers - 1:
            return
        self.recent.append(layer)
        act = set(self.offline)
        for e in self.recent:
            act.update(range(max(0, e - self.radius), min(self.num_layers - 1, e + self.radius + 1)))
        self._active = frozenset(act)

    def active(self) -> frozenset:
        """Layers whose predictor runs for the next token."""
        return self._active
