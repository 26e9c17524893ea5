"""Checks of the arguments of SpecEE's public API (``SpecEE(...)``, ``SpecEEConfig``,
``SpecEE.generate``): bad input is a one-line :class:`ForetellError` saying what was wrong and what
is accepted, raised before any work (once per call, never per token), instead of a raw torch /
Type / Attribute error from deep inside or a silently coerced value. Conventions follow
transformers' ``generate`` where it has them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from foretell.core.checks import is_bool, is_int, is_real
from foretell.core.errors import ForetellError


def show(value, limit: int = 80) -> str:
    """``repr(value)`` for a one-line message: newlines folded, cut to about ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(name: str, value, minimum: int, note: str = "") -> int:
    """``value`` as an int; a ForetellError unless it is an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ForetellError(f"{name} must be an int >= {minimum}{note}, got {show(value)}")
    return int(value)


def check_bool(name: str, value) -> bool:
    if not is_bool(value):
        raise ForetellError(f"{name} must be True or False, got {show(value)}")
    return bool(value)


def check_input_ids(input_ids, vocab_size: int) -> torch.Tensor:
    """``input_ids`` as a long tensor (1, n) or (n,) of token ids in [0, vocab_size), n >= 1 (on the
    device it came on). Accepted: an integer tensor of that shape, or a list (of lists) of ints
    or an integer numpy array, converted as before."""
    accepted = f"pass token ids in [0, {vocab_size}) as an integer tensor (1, n) or (n,)"
    if isinstance(input_ids, Mapping):
        hint = 'pass enc["input_ids"]' if "input_ids" in input_ids else accepted
        raise ForetellError(f"input_ids is a {type(input_ids).__name__} (tokenizer output?); {hint}")
    if isinstance(input_ids, (str, bytes)):
        raise ForetellError(f"input_ids is text ({type(input_ids).__name__}); tokenize it first, e.g. "
                            f"tokenizer(text, return_tensors='pt')['input_ids'], and {accepted}")
    if input_ids is None:
        raise ForetellError(f"input_ids is None; {accepted}")
    if not isinstance(input_ids, torch.Tensor):
        try:
            input_ids = torch.as_tensor(input_ids, device="cpu")
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ForetellError(f"input_ids of type {type(input_ids).__name__} is not a rectangular array of "
                                f"token ids ({why}); {accepted}") from None
    if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
        raise ForetellError(f"input_ids must hold integer token ids, got dtype {str(input_ids.dtype).replace('torch.', '')}; "
                            f"{accepted}")
    if input_ids.dim() == 2 and input_ids.shape[0] != 1:
        raise ForetellError(f"SpecEE decodes one sequence at a time (batch 1), got batch {input_ids.shape[0]} "
                            f"(input_ids of shape {tuple(input_ids.shape)}); pass one row (1, n) or (n,)")
    if input_ids.dim() not in (1, 2):
        raise ForetellError(f"input_ids must be (1, n) or (n,), got shape {tuple(input_ids.shape)}; "
                            f"SpecEE decodes one sequence at a time")
    if input_ids.numel() == 0:
        raise ForetellError("input_ids is empty; pass at least one prompt token")
    if input_ids.is_meta:
        raise ForetellError(f"input_ids is on the meta device (it holds no values); {accepted}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if hi >= vocab_size or lo < 0:
        raise ForetellError(f"input_ids must be token ids in [0, {vocab_size}), got [{lo}, {hi}]")
    return input_ids if input_ids.dtype == torch.long else input_ids.long()


def check_max_new_tokens(value) -> int:
    return check_int("max_new_tokens", value, 0, " (0 returns the prompt)")


def check_sampling(do_sample, temperature, top_k, top_p, generator) -> None:
    """transformers' sampling knobs: ``do_sample`` a bool; ``temperature`` a finite number >= 0
    (> 0 when sampling; greedy ignores it); ``top_k`` an int >= 0 (0 = off); ``top_p`` in (0, 1];
    ``generator`` None or a ``torch.Generator``."""
    check_bool("do_sample", do_sample)
    if not is_real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise ForetellError(f"temperature must be a finite number >= 0 (> 0 when sampling; greedy ignores it), "
                            f"got {show(temperature)}")
    if do_sample and not temperature > 0:
        raise ForetellError(f"temperature must be > 0 when sampling, got {show(temperature)}; "
                            "use do_sample=False for greedy decoding")
    check_int("top_k", top_k, 0, " (0 = no top-k filter)")
    if not is_real(top_p) or not 0 < top_p <= 1:
        raise ForetellError(f"top_p must be in (0, 1], got {show(top_p)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ForetellError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                            f"got {type(generator).__name__} {show(generator)}")


def check_eos_token_id(eos_token_id, vocab_size: int):
    """None, a token id in [0, vocab_size), or a list / tuple / set (or integer tensor) of them;
    returned as an int or a list of ints."""
    accepted = f"an int in [0, {vocab_size}), a list of such ints, or None"
    if eos_token_id is None:
        return None
    if isinstance(eos_token_id, torch.Tensor):
        if eos_token_id.dtype == torch.bool or eos_token_id.is_floating_point() or eos_token_id.dim() > 1:
            raise ForetellError(f"eos_token_id must be {accepted}, got a tensor of dtype "
                                f"{str(eos_token_id.dtype).replace('torch.', '')} and shape {tuple(eos_token_id.shape)}")
        eos_token_id = eos_token_id.tolist()
    many = isinstance(eos_token_id, (list, tuple, set, frozenset))
    ids = list(eos_token_id) if many else [eos_token_id]
    bad = [e for e in ids if not is_int(e) or not 0 <= e < vocab_size]
    if bad:
        raise ForetellError(f"eos_token_id must be {accepted}, got {show(eos_token_id)}")
    return [int(e) for e in ids] if many else int(ids[0])


def check_streamer_and_callback(streamer, callback) -> None:
    """A streamer needs callable ``put`` and ``end`` (like transformers' ``TextStreamer``); a
    callback takes each new token id."""
    if streamer is not None:
        missing = [m for m in ("put", "end") if not callable(getattr(streamer, m, None))]
        if missing:
            raise ForetellError(f"streamer must have put() and end() methods (e.g. transformers.TextStreamer), "
                                f"{type(streamer).__name__} lacks {' and '.join(m + '()' for m in missing)}")
    if callback is not None and not callable(callback):
        raise ForetellError(f"callback must be a callable taking each new token id (or None), got "
                            f"{type(callback).__name__} {show(callback)}")
