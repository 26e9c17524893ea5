"""Per-layer exit predictors: MLP (features -> 512 -> 1, ReLU, sigmoid), one per decoder layer.

Saved as ``<name>.safetensors`` plus ``<name>.json`` (model id, layer count, hidden size, vocab
size, k, feature kind, trained layers, offline schedule, and optionally calibrated per-layer exit
thresholds). Loading checks the JSON against the model and k so a predictor file built for another
model is a clear error, not silent garbage. Configs written before the thresholds existed still
load (no thresholds: the paper's 0.5 everywhere).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from foretell.core.errors import ForetellError

PAPER_THRESHOLD = 0.5


@dataclass
class PredictorConfig:
    """What the predictors were trained for; checked on load."""

    model_id: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    k: int = 4
    in_features: int = 12
    hidden: int = 512
    feature_kind: str = "candidates"          # or "full_vocab"
    layers: list[int] = field(default_factory=list)
    offline_layers: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)   # layer -> calibrated exit threshold
    calibration: dict = field(default_factory=dict)              # how the thresholds were chosen


class LayerPredictors(nn.Module):
    """One small MLP per trained layer; ``score(layer, feats)`` is the exit probability."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        self.mlps = nn.ModuleDict({
            str(i): nn.Sequential(nn.Linear(config.in_features, config.hidden), nn.ReLU(),
                                  nn.Linear(config.hidden, 1))
            for i in config.layers})

    def has(self, layer: int) -> bool:
        return str(layer) in self.mlps

    def threshold(self, layer: int, override: float | None = None) -> float:
        """Exit threshold of ``layer``: ``override`` when given, else the calibrated one from the
        config, else the paper's 0.5."""
        if override is not None:
            return float(override)
        return float(self.config.thresholds.get(str(layer), PAPER_THRESHOLD))

    def thresholds_for(self, override: float | None = None) -> dict[int, float]:
        """:meth:`threshold` of every predicted layer (``{layer: threshold}``)."""
        return {l: self.threshold(l, override) for l in self.config.layers}

    def set_thresholds(self, thresholds: dict[int, float], calibration: dict | None = None) -> None:
        """Store calibrated per-layer thresholds (saved with the config by :meth:`save`)."""
        self.config.thresholds = {str(int(l)): float(t) for l, t in sorted(thresholds.items())}
        if calibration is not None:
            self.config.calibration = dict(calibration)

    def logit(self, layer: int, feats: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score (...,) of ``feats`` (..., in_features) at ``layer``."""
        return self.mlps[str(layer)](feats).squeeze(-1)

    def score(self, layer: int, feats: torch.Tensor) -> torch.Tensor:
        """Exit probability (...,) at ``layer``."""
        return torch.sigmoid(self.logit(layer, feats))

    def save(self, directory: str | Path, name: str = "predictors") -> Path:
        """Write ``name``.safetensors and ``name``.json into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().float().cpu() for k, v in self.state_dict().items()},
                  str(d / f"{name}.safetensors"))
        (d / f"{name}.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return d / f"{name}.json"

    @classmethod
    def load(cls, directory: str | Path, name: str = "predictors") -> "LayerPredictors":
        """Read predictors saved by :meth:`save`; missing or malformed files raise ForetellError."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / f"{name}.json", d / f"{name}.safetensors"
        if not cfg_path.is_file() or not w_path.is_file():
            raise ForetellError(f"predictor files not found: expected {cfg_path} and {w_path} "
                                f"(made by 'foretell specee train')")
        try:
            cfg = PredictorConfig(**json.loads(cfg_path.read_text()))
        except (TypeError, json.JSONDecodeError) as exc:
            raise ForetellError(f"bad predictor config {cfg_path}: {exc}; expected the JSON written "
                                f"by 'foretell specee train'") from None
        module = cls(cfg)
        try:
            module.load_state_dict(load_file(str(w_path)))
        except RuntimeError as exc:
            raise ForetellError(f"predictor weights {w_path} do not match {cfg_path}: "
                                f"{str(exc).splitlines()[0]}") from None
        return module.eval()

    def check_compatible(self, *, num_layers: int, hidden_size: int, vocab_size: int, k: int | None = None,
                         model_id: str | None = None) -> None:
        """Raise ForetellError unless these predictors were trained for this model (and k)."""
        c = self.config
        got = (c.num_layers, c.hidden_size, c.vocab_size)
        want = (num_layers, hidden_size, vocab_size)
        if got != want:
            raise ForetellError(
                f"predictors were trained for model {c.model_id!r} (layers, hidden, vocab) = {got}, "
                f"but this model has {want}; train predictors for it with 'foretell specee train'")
        if k is not None and c.feature_kind == "candidates" and c.k != k:
            raise ForetellError(f"predictors were trained with k={c.k} draft candidates, got k={k}; "
                                f"use k={c.k} or retrain")
