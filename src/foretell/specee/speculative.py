"""Chain draft-then-verify decoding: lossless (full verification) and merged with early exit.

Each round the draft proposes a chain of ``gamma`` tokens (greedy), the target verifies
``[last token, d_1 .. d_gamma]`` in one pass, the longest matching prefix is accepted plus one
target token. Rejected tokens are rolled back from both caches; accepted draft tokens are re-fed
to the draft with the target's true states (EAGLE does the same).

Merged (``specee+speculative``): the verify pass itself may stop early. After a scheduled layer,
the rows with a confident predictor (leading run) get the full-vocab argmax; if those argmaxes are
among each row's draft candidates and the walk "accept while argmax == next draft token" ends
inside them (a mismatch gives the bonus token, or all rows agree), the pass exits there.
Greedy only (sampling: :mod:`foretell.specee.speculative_sampling`).

``tree``: both may also verify the draft's runners-up at each depth as side leaves in the same
pass (:mod:`foretell.specee.tree`). In the merged verify only the chain rows can exit (the side
leaves have no draft candidates for the predictors); a walk that would enter a side leaf runs the
pass to the end and walks the whole tree.
"""

from __future__ import annotations

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess
from foretell.specee.checked import ExitChecker
from foretell.specee.draft import Draft
from foretell.specee.generate import DecodeStats, greedy_pick, start_decode
from foretell.specee.kv import LayerStepper
from foretell.specee.rules import ExitDecision, SpecEERule
from foretell.specee.tree import DraftTree, check_tree_widths, keep_rows, verify_tree


class MergedVerifyRule(SpecEERule):
    """SpecEE's exit rule applied to a verify block (rows = last token + draft chain [+ a tree's
    side leaves, which are verified but never exit])."""

    name = "specee+speculative"

    def start_chain(self, cands: torch.Tensor, chain: torch.Tensor, side_children: list[set[int]] | None = None) -> None:
        """``cands`` (gamma+1, k) per chain row; ``side_children``: a draft tree's side-leaf tokens
        per chain row (their rows have no draft candidates, so a walk that enters one cannot exit)."""
        self.start_token(cands)
        self.chain = chain                           # (gamma,) draft tokens
        self.side_children = side_children

    def __call__(self, layer, h):
        h = h[: self.cands.shape[0]]                 # the chain rows (a tree's side leaves follow them)
        evaluated = self._confident(layer, h)
        if evaluated is None:
            return None
        x, conf = evaluated
        lead = int(conf.long().cumprod(0).sum())
        if lead == 0:
            return None
        ok, top, logits = self.candidate_argmax(x[:lead], self.cands[:lead])
        q = h.shape[0]
        oks, tops, chain = ok.tolist(), top.tolist(), self.chain.tolist()      # one read-back each
        for j in range(lead):
            if not oks[j]:
                return None
            if j == q - 1 or tops[j] != chain[j]:
                if self.side_children is not None and tops[j] in self.side_children[j]:
                    return None                      # the walk goes on into a side leaf
                return ExitDecision(layer, None if logits is None else logits[: j + 1], top=top[: j + 1],
                                    states=x[: j + 1], lm_head=self.acc.logits)
        return None


@torch.no_grad()
def speculative_decode(acc: DecoderAccess, stepper: LayerStepper, draft: Draft, input_ids: torch.Tensor, *,
                       max_new_tokens: int, gamma: int = 3, k: int = 4, rule: MergedVerifyRule | None = None,
                       eos_token_id=None, streamer=None, callback=None,
                       check: bool = False, tree=()) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy chain speculative decoding; with ``rule`` the verify pass uses early exit, and with
    ``check`` (lazy KV only) exited verify rows are checked once a later pass finishes them
    (:mod:`foretell.specee.checked`: lossless again; only checked tokens are emitted). ``tree``:
    side leaves per depth, e.g. (2, 1) also verifies the draft's 2nd and 3rd choices at depth 1 and
    its 2nd at depth 2 (not with ``check``).

    Runs on the model's device; the returned ids are on ``input_ids``' device. The draft chain
    stays on the device; a round reads back the verify pass's tokens and the chain once (plus the
    merged rule's syncs on evaluated layers)."""
    widths = check_tree_widths(tree, gamma)
    if any(widths) and check:
        raise ForetellError("checked exits verify a chain; use tree=() with check_exits")
    dev = acc.device
    if rule is not None:
        rule.reset_state()
    em, stats, tok, state, _ = start_decode(acc, stepper, draft, input_ids, max_new_tokens, eos_token_id, streamer,
                                            callback, greedy_pick)
    feed_tokens, feed_states = torch.tensor([tok], device=dev), state.view(1, -1)
    checker = ExitChecker(acc, stepper, draft, em, stats, max_new_tokens) if check else None
    while not em.done:
        if checker is not None and checker.tentative_done():
            fixed = checker.finish()
            if fixed is not None:
                feed_tokens, feed_states = torch.tensor([fixed[0]], device=dev), fixed[1].view(1, -1)
            checker.publish()
            continue
        scores, g = draft.feed(feed_tokens, feed_states)
        committed = draft.length()
        firsts, cands, sides = [], [], []
        steps = gamma + (1 if rule is not None else 0)   # merged also needs the last row's candidates
        for j in range(steps):
            w = widths[j] if j < len(widths) else 0
            if max(k, 1 + w) > scores.numel():
                raise ForetellError(f"the draft scores {scores.numel()} tokens, fewer than the {max(k, 1 + w)} "
                                    f"candidates that k={k} and tree={widths} ask for; use a smaller k or tree")
            c = draft.topk(scores, max(k, 1 + w))
            cands.append(c[:k])
            sides.append(c[1:1 + w])
            if j < gamma:
                firsts.append(c[:1])
                if j < steps - 1:
                    scores, g = draft.feed(c[:1], None if g is None else g.view(1, -1))
        draft.crop(committed)
        chain_t = torch.cat(firsts).to(dev)
        dtree = DraftTree.build(feed_tokens[-1:], chain_t, sides[:gamma]) if any(widths) else None
        if rule is not None:
            rule.start_chain(torch.stack(cands).to(dev), chain_t, dtree.side_children() if dtree else None)
        start = stepper.num_tokens
        exit_fn = None if checker is not None and checker.must_go_deep() else rule
        if dtree is not None:
            h, layer, dec = verify_tree(acc, stepper, dtree, exit_fn)
        else:
            h, layer, dec = stepper.run(torch.cat([feed_tokens[-1:], chain_t]), exit_fn)
        stats.layers.append(layer + 1)
        if checker is not None and not dec:
            fixed = checker.check(start)
            if fixed is not None:                        # an earlier exit was wrong: this pass is wasted
                stats.emitted.append(0)
                feed_tokens, feed_states = torch.tensor([fixed[0]], device=dev), fixed[1].view(1, -1)
                checker.publish()
                continue
        if dtree is not None and not dec:                # full pass over a tree: walk it, keep the path
            rows, accepted = dtree.accept(acc.logits(acc.norm(h)).argmax(-1).tolist())
            keep_rows(stepper, start, rows)
            states = acc.norm(h[rows])
        else:                                            # a chain, or an exit (its walk ended on the chain)
            if dec:
                y = dec.argmax()
                rule.record(layer)
            else:
                y = acc.logits(acc.norm(h)).argmax(-1)
            ys, chain = y.tolist(), chain_t.tolist()
            m = 0
            while m < min(gamma, len(ys) - 1) and ys[m] == chain[m]:
                m += 1
            accepted = chain[:m] + [ys[m]]
            stepper.rollback(stepper.num_tokens - start - (m + 1))
            states = acc.norm(h[: m + 1])
        if checker is not None:
            checker.ids.extend(accepted)
            checker.publish()
            stats.emitted.append(len(accepted))
        else:
            stats.emitted.append(em.emit_all(accepted))
        feed_tokens, feed_states = torch.tensor(accepted, device=dev), states
    if checker is not None:
        checker.close()
    if rule is not None:
        stats.evaluations, stats.head_checks = rule.evaluations, rule.head_checks
    return em.finish(), stats
