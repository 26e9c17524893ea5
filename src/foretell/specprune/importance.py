"""Attention-based token scores, materialised only for the rows and layers that need them.

The decoder layer itself always runs on the fast SDPA path. At a scoring layer we recompute, from
the layer's own input norm and q/k projections, the softmax attention of the chosen *query rows*
(instruction tokens, or all non-visual tokens) over all keys: [heads, rows, keys]. That is the
same attention map the layer uses, at a cost of rows x keys instead of keys x keys.
"""

from __future__ import annotations

import torch

from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv


def query_attention(layer, hidden: torch.Tensor, rope: tuple, query_rows: torch.Tensor) -> torch.Tensor:
    """Softmax attention [heads, len(query_rows), n] of ``query_rows`` over all n tokens in ``layer``.

    ``hidden`` is the layer input [1, n, H]; ``rope`` the (cos, sin) pair of the current rows.
    """
    attn = layer.self_attn
    cos, sin = rope
    x = layer.input_layernorm(hidden)
    head_dim = attn.head_dim
    q = attn.q_proj(x[:, query_rows]).view(1, len(query_rows), -1, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(1, x.shape[1], -1, head_dim).transpose(1, 2)
    q, _ = apply_rotary_pos_emb(q, q, cos[:, query_rows], sin[:, query_rows])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    return torch.softmax(scores.float(), dim=-1)[0]


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


def attention_macs(num_query_rows: int, num_tokens: int, hidden: int, q_width: int, kv_width: int) -> int:
    """Multiply-accumulates of :func:`query_attention` (q for the rows, k for all tokens, QK^T)."""
    return num_query_rows * hidden * q_width + num_tokens * hidden * kv_width + num_query_rows * num_tokens * q_width
