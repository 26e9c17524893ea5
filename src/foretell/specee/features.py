"""The predictor's input features — ONE implementation for training and inference.

SpecEE feature at layer i for k draft candidates c_1..c_k (12 numbers for k=4):
  * the candidates' logits from the layer's normalised hidden state times their k LM-head rows
    (the "mini head": k dot products, not the full vocabulary),
  * their softmax over the k,
  * the change of that softmax since the previous layer (layer i-1; uniform before layer 0).

Features are float32 for every model dtype: a bfloat16 model's normalised states are upcast
(exactly) before the k dot products, in training and at inference alike.

The "previous layer" is always i-1, at inference as in training: inference evaluates the mini head
on each scheduled layer and on the layer just below it (k dot products), the MLP only on scheduled
layers. This removes the official code's drift (training used layer i-1, inference the previous
*evaluated* layer).

:func:`full_vocab_features` is the costly peer's input (needs the full-vocabulary logits).
"""

from __future__ import annotations

import torch

NUM_FULL_VOCAB_FEATURES = 12


def num_features(k: int) -> int:
    """Feature width of the candidate features for ``k`` candidates."""
    return 3 * int(k)


def candidate_logits(h_normed: torch.Tensor, cand_rows: torch.Tensor) -> torch.Tensor:
    """Mini-head logits: (..., d) normalised states x (..., k, d) LM-head rows -> (..., k), always
    computed in float32 (a bfloat16 model's states and rows are upcast exactly; the features and
    the predictors stay float32 whatever the model's dtype)."""
    return torch.matmul(cand_rows.float(), h_normed.float().unsqueeze(-1)).squeeze(-1)


def layer_features(cand_logits: torch.Tensor, prev_probs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of one layer from its candidate logits (..., k) and the previous layer's softmax
    over the candidates (None before the first layer). Returns (features (..., 3k), probs (..., k))."""
    probs = torch.softmax(cand_logits.float(), dim=-1)
    if prev_probs is None:
        prev_probs = torch.full_like(probs, 1.0 / probs.shape[-1])
    return torch.cat([cand_logits.float(), probs, probs - prev_probs], dim=-1), probs


def all_layer_features(layer_states_normed: torch.Tensor, cand_rows: torch.Tensor) -> torch.Tensor:
    """Features of every layer: (L, T, d) normalised states, (T, k, d) rows -> (L, T, 3k).

    Used by training; calls :func:`layer_features` layer by layer exactly like inference does."""
    feats, prev = [], None
    for i in range(layer_states_normed.shape[0]):
        f, prev = layer_features(candidate_logits(layer_states_normed[i], cand_rows), prev)
        feats.append(f)
    return torch.stack(feats)


def full_vocab_features(logits: torch.Tensor) -> torch.Tensor:
    """12 features of full-vocabulary logits (..., V): top-8 probabilities, entropy, top1-top2
    logit gap, top-1 logit and log-sum-exp. Input of the paper's costly full-vocab predictor peer."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    logp = logits - lse
    p = logp.exp()
    entropy = -(p * logp).sum(-1, keepdim=True)
    top = torch.topk(logits, 8, dim=-1).values
    top_p = (top - lse).exp()
    return torch.cat([top_p, entropy, top[..., :1] - top[..., 1:2], top[..., :1], lse], dim=-1)


def top2_prob_gap(logits: torch.Tensor) -> torch.Tensor:
    """AdaInfer's signal: probability gap between the top-1 and top-2 tokens (...,)."""
    p = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(p, 2, dim=-1).values
    return top[..., 0] - top[..., 1]
