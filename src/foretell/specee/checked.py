"""Checked exits: SpecEE made lossless by the lazy KV strategy's own deferred work.

With ``kv_strategy="lazy"`` an exited token's skipped layers run later, batched into a deeper pass
(:class:`~foretell.specee.kv.LayerStepper`). When that pass reaches the last layer, the exited
row has gone through the whole stack, so the full model's prediction for the next position costs
one more LM-head row. :class:`ExitChecker` reads it: if it differs from the token the exit emitted,
that token and everything decoded after it are rolled back (target and draft caches) and the full
model's token takes its place, as in self-speculative decoding (LayerSkip, Draft & Verify) with the
exits as the draft. Greedy only; the output equals the full model's greedy output.

The exits then trade a saved pass tail against a wasted pass per wrong exit, so a lower threshold
than the agreement-bound calibration can pay; ``DecodeStats.layers`` counts every pass, wasted
ones and the final flush included, so layers per emitted token is the honest cost.
"""

from __future__ import annotations

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess
from foretell.specee.draft import Draft
from foretell.specee.generate import DecodeStats, Emitter, exit_step, greedy_pick, start_decode
from foretell.specee.kv import LayerStepper
from foretell.specee.rules import ExitDecision, ExitRule


def require_lazy(kv_strategy: str) -> None:
    """Checked exits ride on the lazy strategy's deferred layers; any other strategy is an error."""
    if kv_strategy != "lazy":
        raise ForetellError(f"check_exits needs kv_strategy='lazy' (the check rides on the deferred layers), "
                            f"got {kv_strategy!r}")


class ExitChecker:
    """Every token decoded so far (``ids``: prompt + new, checked or not), the check of exited rows
    when they finish the last layer, and the hand-over of checked tokens to the :class:`Emitter`."""

    def __init__(self, acc: DecoderAccess, stepper: LayerStepper, draft: Draft | None, em: Emitter,
                 stats: DecodeStats, max_new_tokens: int, max_unchecked: int = 8):
        require_lazy(stepper.kv_strategy)
        self.acc, self.stepper, self.draft, self.em, self.stats = acc, stepper, draft, em, stats
        self.ids = list(em.ids)
        self.end = em.n_prompt + int(max_new_tokens)
        self.max_unchecked = int(max_unchecked)

    def frontier(self) -> int:
        """Length of the checked prefix of ``ids`` (tokens whose predicting row finished the stack)."""
        return self.stepper.num_tokens - sum(h.shape[0] for _, h in self.stepper.pending) + 1

    def must_go_deep(self) -> bool:
        """Too many unchecked tokens: the next pass runs the whole stack (bounds the work a wrong
        exit can waste, and how far the emitted text lags)."""
        return len(self.ids) - self.frontier() >= self.max_unchecked

    def tentative_done(self) -> bool:
        """Enough tokens (or an eos) decoded, checked or not."""
        return len(self.ids) >= self.end or any(t in self.em.eos for t in self.ids[len(self.em.ids):])

    def check(self, upto: int):
        """Check the rows at positions < ``upto`` that just finished the last layer. On the first
        wrong prediction, roll back to it and put the full model's token there; returns (that
        token, its row's normalised final state), else None."""
        if self.stepper.finished is None:
            return None
        start, rows = self.stepper.finished
        n = min(rows.shape[0], upto - start)
        if n <= 0:
            return None
        states = self.acc.norm(rows[:n])
        preds = self.acc.logits(states).argmax(-1).tolist()
        for j, tok in enumerate(preds):
            p = start + j
            if self.ids[p + 1] != tok:
                self.stats.rollbacks += 1
                self.stepper.rollback(self.stepper.num_tokens - (p + 1))
                if self.draft is not None:
                    self.draft.crop(p)                    # draft entries pair positions 1..p
                del self.ids[p + 1:]
                self.ids.append(tok)
                return tok, states[j]
        return None

    def finish(self):
        """Run every deferred row to the top and check it (one pass, counted in the stats)."""
        pending = self.stepper.pending
        if not pending:
            raise RuntimeError("checked decoding: tokens left unchecked without deferred rows")
        resume = min(r for r, _ in pending)
        upto = self.stepper.num_tokens
        self.stepper.flush()
        self.stats.layers.append(self.acc.num_layers - resume)
        self.stats.emitted.append(0)
        return self.check(upto)

    def close(self) -> None:
        """Record how many tentative tokens did not make it into the output."""
        self.stats.retracted = sum(self.stats.emitted) - (len(self.em.ids) - self.em.n_prompt)

    def publish(self) -> None:
        """Hand the checked tokens (those whose predicting row finished the stack) to the emitter."""
        for t in self.ids[len(self.em.ids):self.frontier()]:
            self.em.emit(t)


@torch.no_grad()
def checked_decode(acc: DecoderAccess, stepper: LayerStepper, rule: ExitRule, draft: Draft | None,
                   input_ids: torch.Tensor, *, max_new_tokens: int, k: int = 4, eos_token_id=None,
                   streamer=None, callback=None) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy decoding, one token per target pass, with ``rule``'s exits checked (module
    docstring). Only checked tokens reach the streamer/callback. Returns (prompt + new ids on
    ``input_ids``' device, stats: one ``layers`` entry per target pass, ``rollbacks``)."""
    dev = acc.device
    rule.reset_state()
    em, stats, _, state, _ = start_decode(acc, stepper, draft, input_ids, max_new_tokens, eos_token_id, streamer,
                                          callback, greedy_pick)
    checker = ExitChecker(acc, stepper, draft, em, stats, max_new_tokens)
    while not em.done:
        if checker.tentative_done():
            fixed = checker.finish()
        else:
            start = stepper.num_tokens
            out, state, layer = exit_step(acc, stepper, None if checker.must_go_deep() else rule, draft,
                                          torch.tensor([checker.ids[-1]], device=dev), state, k)
            checker.ids.append(int(out.argmax()[-1]) if isinstance(out, ExitDecision) else int(out.argmax(-1)))
            stats.layers.append(layer + 1)
            stats.emitted.append(1)
            fixed = checker.check(start) if layer == acc.num_layers - 1 else None
        if fixed is not None:
            state = fixed[1]
        checker.publish()
    checker.close()
    stats.evaluations, stats.head_checks = rule.evaluations, rule.head_checks
    return em.finish(), stats
