"""Speculative sampling: draft-then-verify that samples from exactly the target's distribution.

Greedy speculative decoding accepts a draft token when it equals the target's argmax. With
``do_sample=True`` the rule is the one of Leviathan et al. (2023) and Chen et al. (2023), which
transformers' assisted generation also uses: the draft samples ``x_j ~ q_j``; the target's
distribution at the same position is ``p_j`` (both after the same temperature / top-k / top-p
warping); ``x_j`` is accepted with probability ``min(1, p_j(x_j) / q_j(x_j))``; on the first
rejection the token is drawn from ``max(0, p_j - q_j)`` renormalised and the round ends; if all
``gamma`` are accepted a bonus token is drawn from ``p_gamma``. Every emitted token is then
distributed exactly as the target's own sampling would give it, whatever the draft.

The chain only (a sampled tree needs SpecInfer's multi-candidate rejection; not built).
"""

from __future__ import annotations

import torch

from foretell.specee.adapters import DecoderAccess
from foretell.specee.draft import Draft
from foretell.specee.generate import DecodeStats, TokenPicker, start_decode
from foretell.specee.kv import LayerStepper


def draft_probs(draft: Draft, picker: TokenPicker, scores: torch.Tensor, vocab: int) -> torch.Tensor:
    """The draft's warped distribution over the target's vocabulary (V,) (zero outside the
    draft's vocabulary subset)."""
    sub = picker.probs(scores.view(1, -1))[0]
    ids = draft.to_target_ids(torch.arange(sub.numel(), device=sub.device))
    return torch.zeros(vocab, device=sub.device, dtype=sub.dtype).index_copy_(0, ids.to(sub.device), sub)


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, x: int, u: float,
                       generator: torch.Generator | None) -> int | None:
    """One verification step: None when ``x`` (drawn from ``q``) is accepted under ``p`` given the
    uniform ``u``, else the replacement drawn from the residual ``max(0, p - q)``."""
    px, qx = float(p[x]), float(q[x])
    if qx > 0 and u * qx < px:                       # u < min(1, p/q) without dividing
        return None
    residual = (p - q).clamp_min(0)
    if float(residual.sum()) <= 0:                   # p == q up to rounding: any draw from p is exact
        residual = p
    return int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


@torch.no_grad()
def speculative_sample(acc: DecoderAccess, stepper: LayerStepper, draft: Draft, input_ids: torch.Tensor, *,
                       picker: TokenPicker, max_new_tokens: int, gamma: int = 3, eos_token_id=None,
                       streamer=None, callback=None) -> tuple[torch.Tensor, DecodeStats]:
    """Chain speculative sampling (batch 1); tokens follow the target's warped distribution."""
    dev = acc.device
    picker.check_device(dev)
    g = picker.generator
    em, stats, tok, state, _ = start_decode(acc, stepper, draft, input_ids, max_new_tokens, eos_token_id, streamer,
                                            callback, picker)
    feed_tokens, feed_states = torch.tensor([tok], device=dev), state.view(1, -1)
    vocab = acc.vocab_size
    while not em.done:
        scores, hs = draft.feed(feed_tokens, feed_states)
        committed = draft.length()
        chain, qs = [], []
        for j in range(gamma):
            q = draft_probs(draft, picker, scores, vocab)
            x = int(torch.multinomial(q, 1, generator=g))
            chain.append(x)
            qs.append(q)
            if j < gamma - 1:
                scores, hs = draft.feed(torch.tensor([x], device=dev), None if hs is None else hs.view(1, -1))
        draft.crop(committed)
        block = torch.cat([feed_tokens[-1:], torch.tensor(chain, device=dev)])
        h, _, _ = stepper.run(block)
        stats.layers.append(acc.num_layers)
        ps = picker.probs(acc.logits(acc.norm(h)))
        us = torch.rand(gamma, generator=g, device=dev).tolist()
        accepted = []
        for j in range(gamma):
            y = accept_or_resample(ps[j], qs[j], chain[j], us[j], g)
            if y is not None:
                accepted.append(y)
                break
            accepted.append(chain[j])
        else:
            accepted.append(int(torch.multinomial(ps[gamma], 1, generator=g)))
        m = len(accepted) - 1                          # draft tokens kept
        stepper.rollback(gamma - m)
        stats.emitted.append(em.emit_all(accepted))
        feed_tokens, feed_states = torch.tensor(accepted, device=dev), acc.norm(h[: m + 1])
    return em.finish(), stats
