"""Loading a model folder (``config.json`` + ``model.safetensors``) with one-line errors.

The SpecDiff digits DiTs and the SpecPrune testbed VLA are both saved as a JSON config beside a
safetensors file. A folder that is damaged (truncated JSON, a file that is not safetensors, weights
of another configuration) must give the user a clear error naming the file, not a parser traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from foretell.core.errors import ForetellError

if TYPE_CHECKING:
    import torch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_model_folder(directory: str | Path, build: Callable[[dict], "torch.nn.Module"], *, written_by: str,
                      config_name: str = "config.json", weights_name: str = "model.safetensors"):
    """``build(config dict)`` -> model, then its weights from the safetensors file; eval mode.

    Every way the folder can be wrong is a :class:`ForetellError` naming the file and ``written_by``
    (what writes such folders)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path, w_path = d / config_name, d / weights_name
    hint = f"pass a folder written by {written_by}"
    if not cfg_path.is_file() or not w_path.is_file():
        raise ForetellError(f"{d} has no {config_name} + {weights_name}; {hint}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ForetellError(f"{cfg_path} is not valid JSON ({_first_line(exc)}); {hint}") from None
    if not isinstance(raw, dict):
        raise ForetellError(f"{cfg_path} must hold a JSON object, got {type(raw).__name__}; {hint}")
    try:
        model = build(raw)
    except ForetellError:
        raise
    except (TypeError, ValueError) as exc:
        raise ForetellError(f"{cfg_path} is not a valid configuration ({_first_line(exc)}); {hint}") from None
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError) as exc:
        raise ForetellError(f"{w_path} is not a readable safetensors file ({_first_line(exc)}); {hint}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ForetellError(f"{w_path} does not match {cfg_path.name} ({_first_line(exc)}); {hint}") from None
    return model.eval()
