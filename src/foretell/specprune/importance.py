"""Attention-based token scores, materialised only for the rows and layers that need them.

The decoder layer itself always runs on the fast SDPA path. At a scoring layer the engine captures
the layer's own q/k projection outputs (forward hooks, removed right after) and we form, for the
chosen *query rows* only (instruction tokens, or all non-visual tokens), the softmax attention over
all keys: [heads, rows, keys] -- the same attention map the layer used, at an extra cost of
rows x keys instead of keys x keys, and without recomputing any projection.
"""

from __future__ import annotations

import torch

from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv


def attention_from_projections(layer, q_out: torch.Tensor, k_out: torch.Tensor, rope: tuple, query_rows: torch.Tensor) -> torch.Tensor:
    """Softmax attention [heads, len(query_rows), n] from a layer's captured q_proj / k_proj outputs."""
    attn = layer.self_attn
    cos, sin = rope
    head_dim = attn.head_dim
    n = k_out.shape[1]
    q = q_out[:, query_rows].reshape(1, len(query_rows), -1, head_dim).transpose(1, 2)
    k = k_out.reshape(1, n, -1, head_dim).transpose(1, 2)
    q, _ = apply_rotary_pos_emb(q, q, cos[:, query_rows], sin[:, query_rows])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    return torch.softmax(scores.float(), dim=-1)[0]


def query_attention(layer, hidden: torch.Tensor, rope: tuple, query_rows: torch.Tensor) -> torch.Tensor:
    """Same as :func:`attention_from_projections` but recomputing q/k from the layer input ``hidden``."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    return attention_from_projections(layer, attn.q_proj(x), attn.k_proj(x), rope, query_rows)


def received_attention(probs: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention each key receives, averaged over the query rows (``rows`` selects a subset)."""
    if rows is not None:
        probs = probs[:, rows]
    return probs.mean(dim=(0, 1))


def rank_weights(scores: torch.Tensor, high: float = 10.0, low: float = 0.1) -> torch.Tensor:
    """Rank-based weights: the top-scored token gets ``high``, the lowest ``low``, linearly in between."""
    n = scores.numel()
    out = torch.empty_like(scores, dtype=torch.float32)
    if n == 0:
        return out
    order = torch.argsort(scores, descending=True)
    out[order] = torch.linspace(high, low, n, device=scores.device)
    return out


def attention_macs(num_query_rows: int, num_tokens: int, q_width: int) -> int:
    """Extra multiply-accumulates of :func:`attention_from_projections` (the rows' QK^T)."""
    return num_query_rows * num_tokens * q_width
