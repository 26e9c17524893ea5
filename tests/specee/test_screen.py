"""The exact exit check without the full-vocabulary product (quantised LM head + proven bound)."""

import pytest
import torch

from tiny_models import make_predictors
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import Draft
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.rules import SpecEERule
from foretell.specee.scheduler import LayerSchedule
from foretell.specee.screen import LMHeadScreen, _int8_kernel_available

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])


def _mixed_case(seed=0, v=300, d=48, q=400):
    """States and candidate sets: a third holds the argmax, a third misses it, a third misses it
    by a hair (a non-candidate within 1e-3 of the best candidate, which the bound cannot rule out)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(v, d, generator=g)
    x = torch.randn(q, d, generator=g) * 4
    logits = x @ w.T
    order = logits.argsort(-1, descending=True)
    cands = order[:, :4].clone()
    cands[1::3] = order[1::3, 1:5]                          # argmax missing
    near = torch.arange(2, q, 3)
    cands[near] = order[near, 1:5]
    # make the missing argmax a near tie: move x so that rows 0 and 1 of the order differ by ~1e-4
    for i in near.tolist():
        a, b = int(order[i, 0]), int(order[i, 1])
        diff = w[a] - w[b]
        gap = float(diff @ x[i])
        x[i] -= (gap - 1e-4) * diff / float(diff @ diff)
    return w, x, cands


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_bound_holds_and_decision_equals_the_full_product(kind):
    w, x, cands = _mixed_case()
    screen = LMHeadScreen(w, kind)
    exact = x @ w.T
    a, err = screen.approx(x)
    assert bool(((a - exact).abs() <= err).all())            # the error bound is a bound
    ok, top = screen.argmax_among(x, cands)
    full_top = exact.argmax(-1)
    ref = (full_top.unsqueeze(-1) == cands).any(-1)
    assert torch.equal(ok, ref)
    assert 0.2 < float(ok.float().mean()) < 0.5               # the case mixes both outcomes
    assert torch.equal(top[ok], full_top[ok]) and bool((top[~ok] == -1).all())
    assert screen.rows_checked > 0                            # near ties went through the exact path
    assert screen.rows_checked < 0.05 * screen.checks * w.shape[0]   # ... and only few rows did


def test_int8_kernel_guard_refuses_widths_it_cannot_handle():
    assert not _int8_kernel_available(300, 40)               # torch's kernel reads out of bounds there
    with pytest.raises(ValueError, match="int8"):
        LMHeadScreen(torch.randn(300, 40), "int8")
    assert LMHeadScreen(torch.randn(300, 40)).kind == "fp16"


class AlternatingDraft(Draft):
    """Fake draft: every other step its candidates include the token just fed (on this tiny tied-
    embedding model, the argmax of every layer), otherwise 4 random ids: the exit checks succeed
    and fail in turn."""

    def __init__(self, seed: int = 0):
        self.k, self.g = 4, torch.Generator().manual_seed(seed)
        self.reset_state()

    def reset_state(self):
        self._len = 0

    def feed(self, tokens, states):
        self._len += tokens.numel()
        scores = torch.rand(256, generator=self.g)
        if self._len % 2 == 0:
            scores[int(tokens[-1])] = 2.0
        return scores, None

    def crop(self, length):
        self._len = length

    def length(self):
        return self._len


def test_screened_rule_generates_the_same_tokens_as_the_full_product_rule(tiny):
    """Many exit checks (threshold 0, four scheduled layers), half of them failing: the screened
    and the full-product checks take the same decisions, so outputs and layer counts are equal."""
    acc = decoder_access(tiny)
    preds = make_predictors(tiny, bias=0.0, k=4)
    outs, stats = [], []
    for screen in (True, False):
        ee = SpecEE(tiny, preds, AlternatingDraft(), SpecEEConfig(k=4, threshold=0.0))
        rule = SpecEERule(acc, LayerSchedule([1, 2, 3, 4], 6, online=False), preds, 0.0, screen=screen)
        ee.rule = lambda merged=False, rule=rule: rule                  # noqa: E731
        outs.append(ee.generate(PROMPT, max_new_tokens=40, eos_token_id=None))
        stats.append(ee.last_stats)
    assert torch.equal(outs[0], outs[1])
    assert stats[0].layers == stats[1].layers
    exits = sum(1 for n in stats[0].layers[1:] if n < 6)
    assert 10 < exits < 35                                            # both outcomes occur
    assert stats[0].head_checks == stats[1].head_checks > exits + 40  # failed checks on 4 layers
