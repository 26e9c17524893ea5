"""Attention-based token scores, materialised only for the rows and layers that need them.

The decoder layer itself always runs on the fast SDPA path. At a scoring layer the engine captures
the layer's own q/k projection outputs (forward hooks, removed right after) and we form, for the
chosen *query rows* only (instruction tokens, or all non-visual tokens), the softmax attention over
all keys: [heads, rows, keys] -- the same attention map the layer used, at an extra cost of
rows x keys instead of keys x keys, and without recomputing any projection.
"""

from __future__ import annotations

import torch

from transformers.models.llama.modeling_llama import rotate_half


def attention_from_projections(layer, q_out: torch.Tensor, k_out: torch.Tensor, rope: tuple, query_rows: torch.Tensor) -> torch.Tensor:
    """Softmax attention [heads, len(query_rows), n] from a layer's captured q_proj / k_proj outputs
    (batch 1; rotary embedding applied as in transformers' ``apply_rotary_pos_emb``; grouped-query
    heads share their key head without materialising ``repeat_kv``)."""
    attn = layer.self_attn
    cos, sin = rope[0][0], rope[1][0]  # [n, head_dim]
    hd = attn.head_dim
    r, n = len(query_rows), k_out.shape[1]
    groups = attn.num_key_value_groups
    q = q_out[0, query_rows].view(r, -1, hd).transpose(0, 1)  # [heads, r, hd]
    k = k_out[0].view(n, -1, hd).transpose(0, 1)  # [kv_heads, n, hd]
    q = q * cos[query_rows] + rotate_half(q) * sin[query_rows]
    k = k * cos + rotate_half(k) * sin
    kv_heads = k.shape[0]
    scores = torch.matmul(q.reshape(kv_heads, groups * r, hd), k.transpose(1, 2)) * attn.scaling
    return torch.softmax(scores.float(), dim=-1).view(kv_heads * groups, r, n)


def attention_from_rotated(q: torch.Tensor, k: torch.Tensor, query_rows: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax attention [heads, len(query_rows), n] from rotary-embedded queries [1, heads, n, hd] and
    keys [1, kv_heads, n, hd] (a split layer's own tensors; grouped-query heads share their key head)."""
    heads, hd = q.shape[1], q.shape[3]
    kv_heads, n, r = k.shape[1], k.shape[2], len(query_rows)
    qr = q[0][:, query_rows].reshape(kv_heads, (heads // kv_heads) * r, hd)
    scores = torch.matmul(qr, k[0].transpose(1, 2)) * scaling
    return torch.softmax(scores.float(), dim=-1).view(heads, r, n)


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
