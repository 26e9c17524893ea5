"""Attention processors that let a subset of image tokens attend to all tokens, and score tokens.

Each processor wraps the module's stock processor. In mode "off" it calls the stock processor, so
the model behaves exactly as without SpecDiff. In mode "full" it does the stock arithmetic and keeps
the image tokens' keys/values as this layer's cache. In mode "partial" only the selected image tokens
(plus all text tokens) are queries; their fresh keys/values are written into the layer cache and the
queries attend to every token's key (fresh or cached). When ``record`` is on (and the layer is one of
every ``layer_stride``), the layer also adds the attention each image key received to the shared
accumulator, by the context's ``backend`` (see :func:`attention_and_received`); otherwise SDPA runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

_PROBS_BYTES = 256 * 1024 * 1024  # cap on the probability tensor held at once when scoring


@dataclass
class AttentionContext:
    """What the current transformer call asks of every SpecDiff processor (shared by all layers)."""

    mode: str = "off"  # "off" | "full" | "partial"
    idx: torch.Tensor | None = None  # kept image-token indices (partial mode), sorted
    store_kv: bool = False  # full mode: keep the image keys/values as the layer cache
    record: bool = False  # accumulate attention received per image token
    text_len: int = 0  # text tokens (needed by FLUX single-stream blocks)
    received: torch.Tensor | None = None  # (N,) accumulator: float64 on the CPU, float32 elsewhere
    backend: str = "auto"  # how scoring layers compute the received attention (SpecDiffConfig.score_backend)
    layer_stride: int = 1  # only layers whose index is a multiple of this score
    backends_used: dict = field(default_factory=dict)  # backend -> scored layer calls
    rows: dict = field(default_factory=dict)  # memo of :meth:`cache_rows` for this call (cleared per call)
    rope: tuple | None = None  # memo of :meth:`rope_twice` (holds the pair it was built from)

    def rope_twice(self, rotary: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) repeated along the sequence (for queries and keys in one tensor), built once
        per rotary tensor pair (every layer of a call gets the same pair)."""
        kept = self.rope
        if kept is None or kept[0] is not rotary[0] or kept[1] is not rotary[1]:
            kept = self.rope = (rotary[0], rotary[1], torch.cat([rotary[0]] * 2), torch.cat([rotary[1]] * 2))
        return kept[2], kept[3]

    def cache_rows(self, image_start: int, text_len: int, cached_image: int) -> torch.Tensor:
        """Cache row of every fresh key/value row in partial mode, built once per call (not per layer).

        Fresh rows hold the kept image tokens at ``image_start`` (0: [image, text]; else [text, image]
        with ``image_start == text_len``) and all text tokens; the cache holds ``cached_image`` image
        rows and the text rows in the same order.
        """
        key = (image_start, text_len, cached_image)
        rows = self.rows.get(key)
        if rows is None:
            idx = self.idx
            text = torch.arange(text_len, dtype=idx.dtype, device=idx.device)
            if image_start == 0:
                rows = torch.cat([idx, text.add_(cached_image)]) if text_len else idx
            else:
                rows = torch.cat([text, idx + image_start])
            self.rows[key] = rows
        return rows

    def scores_layer(self, index: int) -> bool:
        """Whether layer ``index`` adds its received attention in this call."""
        return self.record and index % self.layer_stride == 0

    def add_received(self, values: torch.Tensor) -> None:
        """Add one layer's attention received by each of the N image keys."""
        values = values.double() if values.device.type == "cpu" else values.float()
        self.received = values if self.received is None else self.received + values

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`attention_and_received` with this context's backend; counts the backend that ran."""
        out, received, used = attention_and_received(q, k, v, self.backend, keys)
        self.backends_used[used] = self.backends_used.get(used, 0) + 1
        return out, received


def attention_and_received(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto", keys: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Attention output, attention received per key (Sk,) or per key of ``keys`` = (start, count), and
    the backend that ran.

    "explicit": :func:`attention_with_received` (probabilities materialised head-chunked); "auto" on
    the CPU. "sdpa" / "triton": the output from a fused SDPA kernel and the received attention from a
    second pass that stores no probabilities (:func:`foretell.specdiff.received.fused_attention_with_received`);
    "auto" on CUDA is "triton" (it falls back to "sdpa" without Triton), elsewhere "sdpa".
    """
    if backend == "auto":
        backend = {"cpu": "explicit", "cuda": "triton"}.get(q.device.type, "sdpa")
    if backend == "explicit":
        out, received = attention_with_received(q, k, v)
        return out, received if keys is None else received.narrow(0, *keys), "explicit"
    from foretell.specdiff.received import fused_attention_with_received

    return fused_attention_with_received(q, k, v, backend, keys)


def attention_with_received(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, compute_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v with explicit probabilities; also the total probability per key.

    q: (B, H, Sq, d), k/v: (B, H, Sk, d). Returns (out (B, H, Sq, d), received (Sk,) float64).
    Heads are processed in chunks so the probability tensor stays under a memory cap (256 MiB on the
    CPU, a share of the free memory on CUDA: :func:`foretell.specdiff.received.chunk_bytes`).
    ``compute_dtype`` (default :func:`score_dtype`): float32, or on a GPU with float16/bfloat16
    inputs the input dtype (tensor-core matmuls, softmax computed in float32 and stored in that
    dtype, received summed in float32), as flash attention does; float32 there would make every
    scoring step several times slower than the forward it scores.
    """
    b, h, sq, d = q.shape
    sk = k.shape[2]
    scale = d**-0.5
    work = compute_dtype or score_dtype(q)
    itemsize = torch.empty((), dtype=work).element_size()
    cap = _PROBS_BYTES
    if q.device.type == "cuda":
        from foretell.specdiff.received import chunk_bytes

        cap = chunk_bytes(q.device)
    chunk = max(1, min(h, cap // max(1, b * sq * sk * itemsize)))
    outs, received = [], None
    for h0 in range(0, h, chunk):
        h1 = min(h, h0 + chunk)
        qc = q[:, h0:h1].reshape(-1, sq, d).to(work) * scale
        kc = k[:, h0:h1].reshape(-1, sk, d).to(work)
        vc = v[:, h0:h1].reshape(-1, sk, v.shape[-1]).to(work)
        probs = torch.bmm(qc, kc.transpose(1, 2))
        torch.softmax(probs, dim=-1, out=probs)
        outs.append(torch.bmm(probs, vc).view(b, h1 - h0, sq, -1))
        part = probs.sum(dim=(0, 1), dtype=torch.float32)
        received = part if received is None else received + part
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.to(q.dtype), received.double()


def score_dtype(q: torch.Tensor) -> torch.dtype:
    """Dtype of the explicit attention when scoring: the input's half dtype on a GPU, else float32."""
    if q.device.type != "cpu" and q.dtype in (torch.float16, torch.bfloat16):
        return q.dtype
    return torch.float32


def _owned(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, as the layer cache: ``t`` itself when it owns its whole storage (a fresh
    projection / RoPE / cat output nobody else holds), else a copy (a view of a larger tensor, e.g.
    fused QKV projections, would keep the whole tensor alive)."""
    t = t.detach()
    whole = t.storage_offset() == 0 and t.is_contiguous()
    if whole and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone()


class _CachingProcessor:
    """Shared state of the SpecDiff processors: the wrapped stock processor and the K/V cache."""

    def __init__(self, original, context: AttentionContext, index: int = 0) -> None:
        self.original = original
        self.context = context
        self.index = index  # position among the wrapped layers (for ``layer_stride``)
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def reset_state(self) -> None:
        """Drop this layer's cached keys/values."""
        self.k_cache = None
        self.v_cache = None

    def _keys_values(
        self, key: torch.Tensor, value: torch.Tensor, dim: int, image_start: int, image_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All keys/values (image and text, in the model's order) for this call.

        ``key``/``value`` hold the fresh rows: image tokens at ``image_start`` .. ``+image_len`` along
        ``dim``, text tokens elsewhere. Full mode: returned as they are (and kept as the cache when
        asked). Partial mode: the fresh image rows go to their token positions ``idx`` in the cache,
        the fresh text rows replace the cached text rows, and the cache itself is returned.
        """
        ctx = self.context
        if ctx.mode == "full":
            if ctx.store_kv:
                self.k_cache = _owned(key)
                self.v_cache = _owned(value)
            return key, value
        if self.k_cache is None:
            raise RuntimeError("SpecDiff: partial step without a key/value cache (no full step ran first)")
        text_len = key.shape[dim] - image_len
        rows = ctx.cache_rows(image_start, text_len, self.k_cache.shape[dim] - text_len)
        for cache, fresh in ((self.k_cache, key), (self.v_cache, value)):
            if fresh.requires_grad:
                fresh = fresh.detach()
            if fresh.dtype != cache.dtype:
                fresh = fresh.to(cache.dtype)
            cache.index_copy_(dim, rows, fresh)  # the kept image rows and every text row in one launch
        return self.k_cache, self.v_cache


class JointCachingAttnProcessor(_CachingProcessor):
    """SD3/SD3.5 (MMDiT) attention, image tokens first then text; also the image-only ``attn2``."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        ctx = self.context
        if ctx.mode == "off" or attention_mask is not None or args or kwargs:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        batch_size = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        num_image = key.shape[2]
        if encoder_hidden_states is not None:
            c_query = attn.add_q_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            c_key = attn.add_k_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            c_value = attn.add_v_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_added_q is not None:
                c_query = attn.norm_added_q(c_query)
            if attn.norm_added_k is not None:
                c_key = attn.norm_added_k(c_key)
            query = torch.cat([query, c_query], dim=2)
            key = torch.cat([key, c_key], dim=2)
            value = torch.cat([value, c_value], dim=2)
        key, value = self._keys_values(key, value, dim=2, image_start=0, image_len=num_image)
        num_image_keys = key.shape[2] - (query.shape[2] - num_image)  # all keys minus the text keys
        if ctx.scores_layer(self.index):
            out, received = ctx.attend(query, key, value, (0, num_image_keys))
            ctx.add_received(received)
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        if encoder_hidden_states is not None:
            n = hidden_states.shape[1]
            out, context_out = out[:, :n], out[:, n:]
            if not attn.context_pre_only:
                context_out = attn.to_add_out(context_out)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if encoder_hidden_states is not None:
            return out, context_out
        return out


class FluxCachingAttnProcessor(_CachingProcessor):
    """FLUX attention: text tokens first then image tokens, RoPE; dual- and single-stream blocks."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        ctx = self.context
        if ctx.mode == "off" or attention_mask is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, value, c_query, c_key, c_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            c_query = attn.norm_added_q(c_query.unflatten(-1, (-1, attn.head_dim)))
            c_key = attn.norm_added_k(c_key.unflatten(-1, (-1, attn.head_dim)))
            c_value = c_value.unflatten(-1, (-1, attn.head_dim))
            value = torch.cat([c_value, value], dim=1)
            text_len = encoder_hidden_states.shape[1]
            parts = [c_query, query, c_key, key]
        else:
            text_len = ctx.text_len
            parts = [query, key]
        if image_rotary_emb is not None:
            # queries and keys in one tensor along the sequence: one RoPE pass (8 kernels) instead of
            # two, with the same arithmetic per element
            qk = apply_rotary_emb(torch.cat(parts, dim=1), ctx.rope_twice(image_rotary_emb), sequence_dim=1)
            query, key = qk.chunk(2, dim=1)
        elif len(parts) == 4:
            query, key = torch.cat(parts[:2], dim=1), torch.cat(parts[2:], dim=1)
        key, value = self._keys_values(key, value, dim=1, image_start=text_len, image_len=key.shape[1] - text_len)
        if ctx.scores_layer(self.index):
            keys = (text_len, key.shape[1] - text_len)
            out, received = ctx.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), keys)
            out = out.transpose(1, 2)
            ctx.add_received(received)
        else:
            out = dispatch_attention_fn(
                query,
                key,
                value,
                attn_mask=None,
                backend=getattr(self.original, "_attention_backend", None),
                parallel_config=getattr(self.original, "_parallel_config", None),
            )
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            c_out, out = out.split_with_sizes([text_len, out.shape[1] - text_len], dim=1)
            out = attn.to_out[0](out.contiguous())
            out = attn.to_out[1](out)
            c_out = attn.to_add_out(c_out.contiguous())
            return out, c_out
        return out


# diffusers' attention modules call inspect.signature(processor.__call__) on every forward; a stored
# signature makes that lookup ~3x cheaper (about 13 us per layer and call on the CPU used here)
for _cls in (JointCachingAttnProcessor, FluxCachingAttnProcessor):
    _cls.__call__.__signature__ = inspect.signature(_cls.__call__)
del _cls
