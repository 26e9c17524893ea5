"""``SpecEE``: the user-facing object — a model, its exit predictors, a draft and the config.

    ee = SpecEE.from_pretrained("smollm2")            # embedded model + shipped assets
    out = ee.generate(input_ids, max_new_tokens=64)   # HF-style: greedy / sampling, eos, streamer
    out = ee.generate(input_ids, method="specee+speculative")
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess, decoder_access
from foretell.specee.checked import checked_decode, require_lazy
from foretell.specee.draft import AssistantDraft, Draft, DraftHead, HeadDraft
from foretell.specee.generate import DecodeStats, TokenPicker, decode
from foretell.specee.kernels import apply_packed_linears, linear_weight_bytes, resolve_linear_kernel
from foretell.specee.kv import KV_STRATEGIES, LayerStepper
from foretell.specee.predictor import LayerPredictors
from foretell.specee.rules import ExitRule, SpecEERule
from foretell.specee.scheduler import LayerSchedule
from foretell.specee.speculative import MergedVerifyRule, speculative_decode
from foretell.specee.speculative_sampling import speculative_sample
from foretell.specee.tree import check_tree_widths
from foretell.specee.validate import (check_bool, check_eos_token_id, check_input_ids, check_int,
                                      check_max_new_tokens, check_sampling, check_streamer_and_callback,
                                      is_int, is_real, show)

ASSETS = Path(__file__).parent / "assets"
METHODS = ("specee", "full", "speculative", "specee+speculative")


@dataclass
class SpecEEConfig:
    """Knobs of SpecEE (the paper's, except: KV strategy chosen by measurement, and the exit
    threshold: None = the per-layer thresholds calibrated into the predictors' config (the paper's
    0.5 where there are none); a number (e.g. 0.5, the paper's) overrides them on every layer).
    ``linear_kernel``: "auto" (oneDNN packed weights for a float32 model on the CPU, where a
    multi-row verify pass then costs about one row, unless the packed copy would take more than a
    quarter of the RAM; see :mod:`foretell.specee.kernels`), "onednn" or "torch" (the stock
    ``F.linear``). ``check_exits``: check every exit once its deferred layers have run and roll
    back a wrong one (lazy KV, greedy only; lossless, see :mod:`foretell.specee.checked`).
    ``gamma``: draft chain length of the speculative methods. ``tree``: side leaves per depth of
    the chain that ``speculative`` also verifies, e.g. (3, 1): the draft's 2nd-4th choices at depth
    1 and its 2nd at depth 2; () = a plain chain (see :mod:`foretell.specee.tree`). The defaults
    (gamma 3, tree (2,)) were the fastest measured on SmolLM2 (``scripts/specee/gamma_sweep.py``).
    ``specee+speculative`` verifies the same tree (its side leaves never exit early); with
    ``check_exits`` it verifies the chain."""

    k: int = 4
    threshold: float | None = None
    kv_strategy: str = "lazy"
    online: bool = True
    window: int = 5
    radius: int = 2
    gamma: int = 3
    linear_kernel: str = "auto"
    check_exits: bool = False
    tree: tuple[int, ...] = (2,)

    def validate(self, vocab_size: int) -> None:
        """A one-line ForetellError for the first bad field (type or range); integer fields given
        as numpy ints become ints, ``tree`` a tuple."""
        if not is_int(self.k) or not 1 <= self.k <= vocab_size:
            raise ForetellError(f"k must be between 1 and the vocabulary size {vocab_size} (an int, the draft "
                                f"candidates per token), got {show(self.k)}")
        self.k = int(self.k)
        if self.threshold is not None and (not is_real(self.threshold) or not 0.0 <= self.threshold <= 1.0):
            raise ForetellError(f"threshold must be a number in [0, 1] or None (calibrated per layer), "
                                f"got {show(self.threshold)}")
        if not isinstance(self.kv_strategy, str) or self.kv_strategy not in KV_STRATEGIES:
            raise ForetellError(f"kv_strategy must be one of {', '.join(KV_STRATEGIES)}, got {show(self.kv_strategy)}")
        self.online = check_bool("online", self.online)
        self.check_exits = check_bool("check_exits", self.check_exits)
        if self.check_exits:
            require_lazy(self.kv_strategy)
        self.window = check_int("window", self.window, 0, " (recent exits the online layers follow; 0 = none)")
        self.radius = check_int("radius", self.radius, 0, " (layers around a recent exit)")
        self.gamma = check_int("gamma (draft chain length)", self.gamma, 1)
        self.tree = check_tree_widths(self.tree, self.gamma)


CONFIG_FIELDS = tuple(f.name for f in fields(SpecEEConfig))


def _unknown_options(names, where: str, also: tuple[str, ...] = ()) -> None:
    """A ForetellError naming the unknown keyword arguments ``names`` of ``where`` and the accepted ones."""
    unknown = [n for n in names if n not in CONFIG_FIELDS and n not in also]
    if unknown:
        accepted = ", ".join(also + CONFIG_FIELDS) if also else ", ".join(CONFIG_FIELDS)
        raise ForetellError(f"{where} got unknown option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; accepted: {accepted}")



class SpecEE:
    """Speculative early exiting around a Llama/Mistral/Qwen2-style transformers model."""

    def __init__(self, model, predictors: LayerPredictors, draft: Draft | None, config: SpecEEConfig | None = None,
                 tokenizer=None):
        self.acc: DecoderAccess = decoder_access(model)
        if config is not None and not isinstance(config, SpecEEConfig):
            raise ForetellError(f"config must be a SpecEEConfig or None, got {type(config).__name__}; pass "
                                "SpecEEConfig(**options), or use SpecEE.from_pretrained(model, predictors=..., **options)")
        if not isinstance(predictors, LayerPredictors):
            raise ForetellError(f"predictors must be a LayerPredictors (LayerPredictors.load(directory)), got "
                                f"{type(predictors).__name__} {show(predictors)}; or use "
                                "SpecEE.from_pretrained(model, predictors=directory)")
        if draft is not None and not isinstance(draft, Draft):
            raise ForetellError(f"draft must be a Draft (HeadDraft, AssistantDraft) or None, got "
                                f"{type(draft).__name__}; for an assistant model use AssistantDraft(model, "
                                "vocab_size) or SpecEE.from_pretrained(model, draft=assistant)")
        self.model, self.tokenizer = model, tokenizer
        self.config = config if config is not None else SpecEEConfig()
        self.config.validate(self.acc.vocab_size)
        predictors.check_compatible(num_layers=self.acc.num_layers, hidden_size=self.acc.hidden_size,
                                    vocab_size=self.acc.vocab_size, k=self.config.k)
        self.predictors = predictors.to(self.acc.device)
        self.draft = draft
        if draft is not None:
            draft.k = self.config.k
            draft.to(self.acc.device)
        offline = predictors.config.offline_layers or predictors.config.layers
        self.schedule = LayerSchedule(list(offline), self.acc.num_layers, window=self.config.window,
                                      radius=self.config.radius, online=self.config.online)
        self.stepper = LayerStepper(self.acc, self.config.kv_strategy)
        drafts = draft.modules() if draft is not None else []
        self.linear_kernel = resolve_linear_kernel(self.config.linear_kernel, self.acc.device, self.acc.dtype,
                                                   linear_weight_bytes(model, *drafts))
        self.kernels = (apply_packed_linears(model, *drafts, batch_hint=self.config.gamma + 1 + sum(self.config.tree))
                        if self.linear_kernel == "onednn" else None)
        self.last_stats: DecodeStats | None = None

    def restore_model(self) -> None:
        """Give the model its stock linear layers back (SpecEE then decodes with them too)."""
        if self.kernels is not None:
            self.kernels.remove()
            self.kernels = None
            self.linear_kernel = "torch"

    @property
    def device(self) -> torch.device:
        """Where the model (and so the predictors and the draft) live."""
        return self.acc.device

    @classmethod
    def from_pretrained(cls, model_or_path=None, predictors: str | Path | None = None, draft="head",
                        tokenizer=None, torch_dtype=None, dtype=None, device=None, **config) -> "SpecEE":
        """``model_or_path``: a transformers model, a local model directory, or None/"smollm2" for the
        embedded SmolLM2-135M-Instruct. ``predictors``: directory with predictors(.json/.safetensors)
        and draft_head(.json/.safetensors) (default: the shipped assets). ``draft``: "head" (EAGLE-
        style head from that directory), a :class:`Draft`, or an assistant transformers model.
        ``torch_dtype`` (or transformers 5's name ``dtype``): weights of a loaded model, float32
        (default) or bfloat16 (``torch.bfloat16`` or ``"bfloat16"``); a model object must already
        be in that dtype. The draft head runs in the model's dtype; predictor features and MLPs
        stay float32. ``device`` ("cpu", "cuda", "cuda:N", "mps" or a ``torch.device``): a model
        loaded from a path goes there (default cpu); a model object stays where it is (``device``,
        if given, must name that device) and the predictors and the draft follow it."""
        from foretell.core.device import resolve_device
        from foretell.specee.loading import dtype_name, load_model, resolve_dtype

        _unknown_options(config, "SpecEE.from_pretrained",
                         ("model_or_path", "predictors", "draft", "tokenizer", "torch_dtype", "dtype", "device"))
        dev = None if device is None else resolve_device(device)
        if torch_dtype is not None and dtype is not None and resolve_dtype(torch_dtype) != resolve_dtype(dtype):
            raise ForetellError(f"torch_dtype={torch_dtype!r} and dtype={dtype!r} disagree; pass one of them")
        want = torch_dtype if torch_dtype is not None else dtype
        if model_or_path is None or isinstance(model_or_path, (str, Path)):
            model, tok = load_model(None if model_or_path is None else str(model_or_path), want, device=dev)
            tokenizer = tokenizer or tok
        else:
            model = model_or_path
        acc = decoder_access(model)
        if dev is not None and not _same_device(dev, acc.device):
            raise ForetellError(f"the model is on {acc.device} but device={device!r} was asked; pass a model "
                                f"path to load it there, or move the model first (model.to({str(dev)!r}))")
        if want is not None and resolve_dtype(want) != acc.dtype:
            raise ForetellError(f"the model's weights are {dtype_name(acc.dtype)} but torch_dtype={want!r} was "
                                f"asked; pass a model path to load it in that dtype, or convert the model first")
        cfg = SpecEEConfig(**config)
        cfg.validate(acc.vocab_size)                      # before loading anything more
        pdir = Path(predictors) if predictors is not None else ASSETS
        preds = LayerPredictors.load(pdir)
        if draft == "head":
            d = HeadDraft(DraftHead.load(acc, pdir), k=cfg.k)
        elif draft is None or isinstance(draft, Draft):
            d = draft
        elif hasattr(draft, "config") and hasattr(draft, "forward"):
            d = AssistantDraft(draft, acc.vocab_size, k=cfg.k)
        else:
            raise ForetellError(f"draft must be 'head', a Draft, an assistant model or None, got {draft!r}")
        return cls(model, preds, d, cfg, tokenizer)

    def rule(self, merged: bool = False) -> ExitRule:
        """The SpecEE exit rule (fresh schedule state) for single-token or verify-block passes."""
        kind = MergedVerifyRule if merged else SpecEERule
        return kind(self.acc, self.schedule, self.predictors, self.config.threshold)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id=None,
                 streamer=None, callback=None, method: str = "specee", generator=None) -> torch.Tensor:
        """Generate like ``model.generate`` (batch 1); returns prompt + new ids (1, n) on
        ``input_ids``' device (decoding runs on the model's). ``method``: specee | full |
        speculative | specee+speculative (the last is greedy only; ``speculative`` samples with
        speculative sampling, its draft tree then reduced to the chain). A sampling
        ``generator`` must be on the model's device type.

        Accepted (else a one-line ForetellError before any work): ``input_ids`` an integer tensor
        (1, n) or (n,) (or a list of ints / an integer numpy array), n >= 1, ids in [0, vocab);
        ``max_new_tokens`` an int >= 0 (0 returns the prompt); ``do_sample`` a bool;
        ``temperature`` a finite number >= 0 (> 0 when sampling); ``top_k`` an int >= 0 (0 = off);
        ``top_p`` in (0, 1]; ``eos_token_id`` None (the model's), an id in [0, vocab) or a list of
        them; ``streamer`` with put()/end(); ``callback`` a callable; ``generator`` a
        ``torch.Generator`` or None."""
        if not isinstance(method, str) or method not in METHODS:
            raise ForetellError(f"method must be one of {', '.join(METHODS)}, got {show(method)}")
        input_ids = check_input_ids(input_ids, self.acc.vocab_size)
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        check_sampling(do_sample, temperature, top_k, top_p, generator)
        eos_token_id = check_eos_token_id(eos_token_id, self.acc.vocab_size)
        check_streamer_and_callback(streamer, callback)
        if eos_token_id is None:
            eos_token_id = getattr(self.model.generation_config, "eos_token_id", None)
        needs_draft = method != "full"
        if needs_draft and self.draft is None:
            raise ForetellError(f"method {method!r} needs a draft; pass draft='head' or an assistant model")
        common = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, streamer=streamer, callback=callback)
        if method == "speculative" and do_sample:
            picker = TokenPicker(do_sample, temperature, top_k, top_p, generator)
            out, stats = speculative_sample(self.acc, self.stepper, self.draft, input_ids, picker=picker,
                                            gamma=self.config.gamma, **common)
        elif method in ("speculative", "specee+speculative"):
            if do_sample:
                raise ForetellError(f"method {method!r} is greedy only; use do_sample=False, or method='speculative' "
                                    "or 'specee' to sample")
            rule = self.rule(merged=True) if method == "specee+speculative" else None
            out, stats = speculative_decode(self.acc, self.stepper, self.draft, input_ids, gamma=self.config.gamma,
                                            k=self.config.k, rule=rule, check=bool(self.config.check_exits and rule),
                                            tree=() if rule is not None and self.config.check_exits else self.config.tree,
                                            **common)
        elif method == "specee" and self.config.check_exits:
            if do_sample:
                raise ForetellError("check_exits is greedy only; use do_sample=False or check_exits=False")
            out, stats = checked_decode(self.acc, self.stepper, self.rule(), self.draft, input_ids, k=self.config.k,
                                        **common)
        else:
            picker = TokenPicker(do_sample, temperature, top_k, top_p, generator)
            rule = self.rule() if method == "specee" else None
            out, stats = decode(self.acc, self.stepper, rule, self.draft if rule else None, input_ids,
                                picker=picker, k=self.config.k, **common)
        self.last_stats = stats
        return out


def _same_device(asked: torch.device, actual: torch.device) -> bool:
    """"cuda" (no index) matches a model on any CUDA device; "cuda:N" only device N."""
    return asked.type == actual.type and (asked.index is None or asked.index == actual.index)
