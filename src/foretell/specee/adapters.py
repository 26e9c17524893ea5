"""Layer-by-layer access to Llama-, Mistral- and Qwen2-style decoders of transformers.

SpecEE needs to run the decoder one layer at a time (to stop early), read the final norm and the
LM head (for the "mini head" features and the exit argmax), and place rotary positions itself.
:class:`DecoderAccess` wraps exactly that; any other architecture gets a :class:`ForetellError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foretell.core.errors import ForetellError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass
class DecoderAccess:
    """The pieces of a decoder-only causal LM that SpecEE drives directly."""

    model: torch.nn.Module
    layers: torch.nn.ModuleList
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    embed: torch.nn.Module
    rotary: torch.nn.Module
    model_type: str

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.weight.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the model's weights (float32 or bfloat16)."""
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the model's weights; SpecEE builds every tensor of a pass there."""
        return self.lm_head.weight.device

    @property
    def model_id(self) -> str:
        cfg = self.model.config
        return str(getattr(cfg, "_name_or_path", "") or getattr(cfg, "name_or_path", "") or cfg.model_type)

    def rotary_for(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for the 1-D tensor of absolute ``positions``."""
        return self.rotary(h, positions.view(1, -1))

    def run_layer(self, i: int, h: torch.Tensor, positions: torch.Tensor, cos_sin, cache,
                  past_len: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run decoder layer ``i`` on ``h`` (1, q, d) whose tokens sit at ``positions`` right after
        ``past_len`` cached tokens of that layer; appends their K/V to ``cache`` layer ``i``.
        ``mask``: an additive (1, 1, q, past_len + q) mask instead of the causal one (draft trees)."""
        q = h.shape[1]
        if mask is None and q > 1 and past_len > 0:
            mask = causal_mask(q, past_len, h.dtype, h.device)
        layer = self.layers[i]
        return layer(h, attention_mask=mask, position_ids=positions.view(1, -1), use_cache=cache is not None,
                     position_embeddings=cos_sin, **{cache_kwarg(layer): cache})

    def logits(self, h_normed: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits of already-normalised hidden states."""
        return self.lm_head(h_normed)


_CACHE_KWARG: dict = {}


def cache_kwarg(module) -> str:
    """Name of the KV-cache argument of a decoder layer's or model's ``forward``: ``cache`` in the
    transformers this was developed on, ``past_key_values`` / ``past_key_value`` in other 4.x/5.x
    releases (a wrong name would land in ``**kwargs`` and silently run without the cache)."""
    cls = type(module)
    if cls not in _CACHE_KWARG:
        import inspect

        params = inspect.signature(module.forward).parameters
        _CACHE_KWARG[cls] = next((p for p in ("cache", "past_key_values", "past_key_value") if p in params), "cache")
    return _CACHE_KWARG[cls]


def causal_mask(q: int, past_len: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive (1, 1, q, past_len + q) mask: query i sees keys 0 .. past_len + i (bottom-right causal).

    Works for both the eager and the SDPA attention of transformers (SDPA's own ``is_causal`` is
    top-left aligned, which is wrong once a cache precedes the queries)."""
    kv = past_len + q
    allowed = torch.arange(kv, device=device)[None, :] <= (past_len + torch.arange(q, device=device))[:, None]
    mask = torch.zeros(q, kv, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.view(1, 1, q, kv)


def decoder_access(model) -> DecoderAccess:
    """Wrap a transformers causal LM; raise :class:`ForetellError` for unsupported architectures."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ForetellError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); SpecEE supports "
            f"decoder-only models of type {', '.join(SUPPORTED_MODEL_TYPES)} (Llama-, Mistral-, Qwen2-style)")
    inner = getattr(model, "model", None)
    parts = {name: getattr(inner, name, None) for name in ("layers", "norm", "embed_tokens", "rotary_emb")}
    lm_head = getattr(model, "lm_head", None)
    if inner is None or lm_head is None or any(v is None for v in parts.values()):
        raise ForetellError(
            f"model {type(model).__name__} lacks model.layers/norm/embed_tokens/rotary_emb or lm_head; "
            f"pass a *ForCausalLM model of type {', '.join(SUPPORTED_MODEL_TYPES)}")
    return DecoderAccess(model=model, layers=parts["layers"], norm=parts["norm"], lm_head=lm_head,
                         embed=parts["embed_tokens"], rotary=parts["rotary_emb"], model_type=model_type)


@torch.no_grad()
def all_layer_states(acc: DecoderAccess, input_ids: torch.Tensor) -> torch.Tensor:
    """Teacher-forced pass without cache: every layer's output, shape (num_layers, seq, d), pre-norm."""
    h = acc.embed(input_ids.view(1, -1).to(acc.device))
    positions = torch.arange(h.shape[1], device=h.device)
    cos_sin = acc.rotary_for(h, positions)
    outs = []
    for i in range(acc.num_layers):
        h = acc.run_layer(i, h, positions, cos_sin, None, 0)
        outs.append(h[0])
    return torch.stack(outs)
