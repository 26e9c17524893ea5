"""Perplexity of held-out text when every next-token distribution comes from the exit layer.

Teacher forcing: the real next token is fed regardless of what was predicted; the exit rule (with
the draft's candidates for SpecEE) picks the layer whose logits score the next token.
"""

from __future__ import annotations

import math

import torch

from foretell.specee.adapters import DecoderAccess
from foretell.specee.draft import Draft
from foretell.specee.generate import exit_step, prefill
from foretell.specee.kv import LayerStepper
from foretell.specee.rules import ExitRule, row_logits


@torch.no_grad()
def teacher_forced_nll(acc: DecoderAccess, stepper: LayerStepper, rule: ExitRule | None, draft: Draft | None,
                       ids: torch.Tensor, n_context: int, k: int = 4) -> tuple[float, int, list[int]]:
    """Summed NLL of ``ids[n_context:]`` given the preceding tokens; returns (nll, tokens, layers used).
    Runs on the model's device; the per-token log-probabilities are read back once at the end."""
    ids = ids.view(-1).to(acc.device)
    if rule is not None:
        rule.reset_state()
    logits, state = prefill(acc, stepper, draft, ids[:n_context])
    logps = [torch.log_softmax(logits.float(), -1)[ids[n_context]]]
    layers = [acc.num_layers]
    for pos in range(n_context, ids.numel() - 1):
        scores, state, layer = exit_step(acc, stepper, rule, draft, ids[pos].view(1), state, k)
        logits = row_logits(scores)
        logps.append(torch.log_softmax(logits.float(), -1)[ids[pos + 1]])
        layers.append(layer + 1)
    nll = 0.0
    for lp in torch.stack(logps).tolist():           # Python float sum, in order, as before
        nll -= lp
    return nll, ids.numel() - n_context, layers


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean NLL)."""
    return math.exp(total_nll / max(1, tokens))
