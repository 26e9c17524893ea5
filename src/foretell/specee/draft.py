"""Draft sources behind one interface: the EAGLE-style draft head (default) and an assistant model.

A draft consumes committed tokens (with the target's normalised state before each token) and
returns scores for the next token; ``topk`` turns them into target-vocabulary candidate ids.
Speculative decoding also feeds the draft its own guesses and later crops them away.

EAGLE-style head: ``fc([embed(t_p); norm(f_{p-1})]) -> one decoder layer (own KV cache) -> g_p``,
logits = target LM head rows (shared, not copied) applied to ``norm(g_p)``. The head scores only a
frequency-ranked subset of the vocabulary (FR-Spec style): on a 135M model with a 49k vocabulary
the full LM head would cost ~25% of a target step; tokens outside the subset can still be emitted
by the target, the draft just cannot propose them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess, cache_kwarg, causal_mask


class Draft:
    """Interface of a draft source (batch 1)."""

    k: int = 4

    def reset_state(self) -> None:
        """Forget the sequence (clear the draft's cache)."""
        raise NotImplementedError

    def feed(self, tokens: torch.Tensor, states: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append ``tokens`` (n,) (with the target's normalised states (n, d) preceding each, or
        None) and return (next-token scores over ``self.vocab_ids`` order, draft state of the last)."""
        raise NotImplementedError

    def crop(self, length: int) -> None:
        """Keep the first ``length`` fed tokens."""
        raise NotImplementedError

    def length(self) -> int:
        raise NotImplementedError

    def to_target_ids(self, idx: torch.Tensor) -> torch.Tensor:
        """Map indices of the score vector to target token ids."""
        return idx

    def to(self, device) -> "Draft":
        """Move the draft's weights to ``device`` (the target's); a draft without weights stays."""
        return self

    def modules(self) -> list[nn.Module]:
        """The torch modules the draft runs (SpecEE gives their linear layers the same kernels)."""
        return []

    def topk(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Target ids of the ``k`` best-scored tokens."""
        return self.to_target_ids(torch.topk(scores, k).indices)


class DraftHead(nn.Module):
    """EAGLE-style draft head: one decoder layer on [token embedding; target state]."""

    def __init__(self, acc: DecoderAccess, vocab_ids: torch.Tensor, *, init_from_last_layer: bool = True):
        super().__init__()
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        tc = acc.config
        d = acc.hidden_size
        head_dim = getattr(tc, "head_dim", None) or d // tc.num_attention_heads
        rope = getattr(tc, "rope_parameters", None) or {"rope_type": "default",
                                                         "rope_theta": getattr(tc, "rope_theta", 10000.0)}
        self.layer_config = LlamaConfig(
            hidden_size=d, intermediate_size=tc.intermediate_size, num_attention_heads=tc.num_attention_heads,
            num_key_value_heads=tc.num_key_value_heads, head_dim=head_dim, rms_norm_eps=tc.rms_norm_eps,
            rope_parameters=dict(rope), max_position_embeddings=tc.max_position_embeddings,
            num_hidden_layers=1, vocab_size=acc.vocab_size)
        self.layer_config._attn_implementation = "sdpa"
        self.fc = nn.Linear(2 * d, d, bias=False)
        self.layer = LlamaDecoderLayer(self.layer_config, 0)
        self.rotary = LlamaRotaryEmbedding(self.layer_config)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, d:].copy_(torch.eye(d, device=self.fc.weight.device))   # start as "use the target state"
            if init_from_last_layer and acc.model_type == "llama":
                self.layer.load_state_dict(acc.layers[-1].state_dict())
        self.register_buffer("vocab_ids", vocab_ids.long().clone(), persistent=True)
        self._acc = [acc]                                      # not a submodule: shared, not saved
        self.eval()

    @property
    def acc(self) -> DecoderAccess:
        return self._acc[0]

    def forward(self, tokens: torch.Tensor, states: torch.Tensor, positions: torch.Tensor, cache=None,
                past_len: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, n), states (B, n, d) normalised target states before each token ->
        (scores over ``vocab_ids`` (B, n, V'), pre-norm draft states (B, n, d))."""
        acc = self.acc
        dt = self.dtype
        dev = self.device
        x = self.fc(torch.cat([acc.embed(tokens.to(dev)).to(dt), states.to(dev, dt)], dim=-1))
        positions = positions.to(dev)
        cos_sin = self.rotary(x, positions.view(1, -1))
        n = x.shape[1]
        mask = causal_mask(n, past_len, x.dtype, x.device) if (n > 1 and past_len > 0) else None
        g = self.layer(x, attention_mask=mask, position_ids=positions.view(1, -1), use_cache=cache is not None,
                       position_embeddings=cos_sin, **{cache_kwarg(self.layer): cache})
        return acc.norm(g) @ self.head_rows().T, g

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the head (its fc/layer weights); inputs are cast to it."""
        return self.fc.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the head's weights; inputs are moved there."""
        return self.fc.weight.device

    def set_dtype(self, dtype: torch.dtype) -> "DraftHead":
        """Cast the trainable weights (fc, decoder layer) to ``dtype``; the rotary table stays
        float32 as in transformers' own models. Used to run the head in the target's dtype."""
        self.fc.to(dtype)
        self.layer.to(dtype)
        return self

    def head_rows(self) -> torch.Tensor:
        """The target LM head's rows of ``vocab_ids`` (V', d) in the head's dtype, gathered once and
        reused while the LM head's weights are unchanged (the gather copies ~9 MB: ~1% of a target
        step on a CPU)."""
        w = self.acc.lm_head.weight
        key = (w.data_ptr(), w._version, self.vocab_ids.data_ptr(), self.vocab_ids._version, self.dtype)
        if getattr(self, "_rows_key", None) != key:
            self._rows = w.detach()[self.vocab_ids].to(self.dtype)
            self._rows_key = key
        return self._rows

    def save(self, directory: str | Path, name: str = "draft_head", extra: dict | None = None) -> None:
        """safetensors (float16 weights; the LM head is the target's) + JSON config."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu()
                 for k, v in self.state_dict().items() if not k.startswith("rotary")}
        save_file(state, str(d / f"{name}.safetensors"))
        acc = self.acc
        meta = {"model_id": acc.model_id, "num_layers": acc.num_layers, "hidden_size": acc.hidden_size,
                "vocab_size": acc.vocab_size, "draft_vocab": int(self.vocab_ids.numel()), **(extra or {})}
        (d / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, acc: DecoderAccess, directory: str | Path, name: str = "draft_head") -> "DraftHead":
        """Load a head saved by :meth:`save` for the model behind ``acc`` (checked), in the
        model's dtype (the float16 file is widened to float32, or cast to bfloat16) and on the
        model's device."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / f"{name}.json", d / f"{name}.safetensors"
        if not cfg_path.is_file() or not w_path.is_file():
            raise ForetellError(f"draft head files not found: expected {cfg_path} and {w_path} "
                                f"(made by 'foretell specee train')")
        meta = json.loads(cfg_path.read_text())
        want = (acc.hidden_size, acc.vocab_size)
        got = (meta.get("hidden_size"), meta.get("vocab_size"))
        if got != want:
            raise ForetellError(f"draft head {w_path} was trained for model {meta.get('model_id')!r} "
                                f"(hidden, vocab) = {got}, this model has {want}; retrain it")
        state = load_file(str(w_path))
        head = cls(acc, state["vocab_ids"], init_from_last_layer=False)
        head.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                             strict=False)
        return head.set_dtype(acc.dtype).to(acc.device).eval()


class _CachedDraft(Draft):
    """A draft whose state is one ``DynamicCache`` and the number of tokens fed into it."""

    def reset_state(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self._len = 0

    def length(self) -> int:
        return self._len

    def crop(self, length: int) -> None:
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]
        self._len = length


class HeadDraft(_CachedDraft):
    """:class:`Draft` backed by a :class:`DraftHead` with its own one-layer KV cache."""

    def __init__(self, head: DraftHead, k: int = 4):
        self.head, self.k = head, k
        self.reset_state()

    def to(self, device) -> "HeadDraft":
        self.head.to(device)
        return self

    def modules(self) -> list[nn.Module]:
        return [self.head]

    @torch.no_grad()
    def feed(self, tokens, states):
        n = tokens.numel()
        # draft position p pairs (t_p, f_{p-1})
        positions = torch.arange(self._len + 1, self._len + 1 + n, device=self.head.device)
        scores, g = self.head(tokens.view(1, -1), states.view(1, n, -1), positions, self.cache, self._len)
        self._len += n
        return scores[0, -1], self.head.acc.norm(g[0, -1])

    def to_target_ids(self, idx):
        return self.head.vocab_ids[idx]


class AssistantDraft(_CachedDraft):
    """:class:`Draft` backed by a smaller causal LM with the same tokenizer (states are ignored)."""

    def __init__(self, model, vocab_size: int, k: int = 4):
        if int(model.config.vocab_size) < vocab_size:
            raise ForetellError(f"assistant vocabulary {model.config.vocab_size} is smaller than the target's "
                                f"{vocab_size}; use an assistant with the same tokenizer")
        self.model, self.k, self.vocab_size = model.eval(), k, vocab_size
        self.reset_state()

    def to(self, device) -> "AssistantDraft":
        self.model.to(device)
        return self

    def modules(self) -> list[nn.Module]:
        return [self.model]

    @torch.no_grad()
    def feed(self, tokens, states):
        dev = self.model.get_input_embeddings().weight.device
        out = self.model(input_ids=tokens.view(1, -1).to(dev), use_cache=True,
                         **{cache_kwarg(self.model): self.cache})
        self._len += tokens.numel()
        return out.logits[0, -1, : self.vocab_size], None


def truncated_assistant(model, num_layers: int):
    """The target's first ``num_layers`` layers (+ final norm and LM head) as an assistant model."""
    import copy

    if not 1 <= num_layers < model.config.num_hidden_layers:
        raise ForetellError(f"assistant layers must be in 1..{model.config.num_hidden_layers - 1}, got {num_layers}")
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = num_layers
    small = type(model)._from_config(cfg, dtype=model.dtype)      # same weight dtype as the target
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < num_layers}
    small.load_state_dict(state, strict=False)
    small.lm_head.weight = small.model.embed_tokens.weight if cfg.tie_word_embeddings else small.lm_head.weight
    return small.to(model.device).eval()
