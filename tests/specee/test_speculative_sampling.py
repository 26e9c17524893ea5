"""Speculative sampling (``method="speculative", do_sample=True``): the emitted tokens follow the
target's own (warped) sampling distribution, whatever the draft proposes."""

import pytest
import torch

from tiny_models import PROMPT, hf_greedy, make_predictors, varied_model
from foretell.core.errors import ForetellError
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.speculative_sampling import accept_or_resample


@pytest.fixture(scope="module")
def tiny():
    return varied_model()


def engine(tiny, gamma=3):
    acc = decoder_access(tiny)
    torch.manual_seed(0)
    head = DraftHead(acc, torch.arange(256))
    with torch.no_grad():                                            # a draft that is right only part of the time
        head.fc.weight.add_(0.2 * torch.randn_like(head.fc.weight))
    draft = HeadDraft(head, k=4)
    return SpecEE(tiny, make_predictors(tiny, k=4), draft, SpecEEConfig(k=4, gamma=gamma, online=False))


def test_accept_or_resample_gives_the_target_distribution():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.50, 0.05, 0.20, 0.00, 0.15, 0.10])
    q = torch.tensor([0.05, 0.40, 0.20, 0.25, 0.00, 0.10])
    n = 20000
    xs = torch.multinomial(q, n, replacement=True, generator=g).tolist()
    us = torch.rand(n, generator=g).tolist()
    out = torch.zeros(6)
    for x, u in zip(xs, us):
        y = accept_or_resample(p, q, x, u, g)
        out[x if y is None else y] += 1
    assert (out / n - p).abs().max() < 0.015
    assert accept_or_resample(p, q, 2, 0.999, g) is None         # p == q there: always accepted
    assert accept_or_resample(p, q, 3, 0.0, g) is not None        # p(x) = 0: never accepted


def test_top_k_1_sampling_equals_greedy(tiny):
    ee = engine(tiny)
    out = ee.generate(PROMPT, max_new_tokens=40, do_sample=True, top_k=1, eos_token_id=None, method="speculative",
                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, hf_greedy(tiny, 40))


def test_second_token_follows_the_target_distribution(tiny):
    """Token 2 is the first one a draft/verify round decides; its marginal must equal the target's."""
    temp = 1.5
    with torch.no_grad():
        p1 = torch.softmax(tiny(PROMPT).logits[0, -1] / temp, -1)
        seqs = torch.cat([PROMPT.repeat(256, 1), torch.arange(256).view(-1, 1)], dim=1)
        p2 = torch.softmax(tiny(seqs).logits[:, -1] / temp, -1)
    exact = p1 @ p2                                               # P(t2) = sum_t1 p(t1) p(t2 | t1)
    ee = engine(tiny, gamma=2)
    n = 800
    counts = torch.zeros(256)
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        out = ee.generate(PROMPT, max_new_tokens=2, do_sample=True, temperature=temp, eos_token_id=None,
                          method="speculative", generator=g)
        counts[out[0, -1]] += 1
    emp = counts / n
    sigma = (exact * (1 - exact) / n).sqrt()
    assert ((emp - exact).abs() <= 5 * sigma + 2e-3).all()
    ee.generate(PROMPT, max_new_tokens=120, do_sample=True, temperature=temp, eos_token_id=None,
                method="speculative", generator=torch.Generator().manual_seed(1))
    rounds = ee.last_stats.emitted[1:-1]
    assert 1 in rounds and max(rounds) > 1                         # draft tokens were rejected and accepted


def test_merged_stays_greedy_only(tiny):
    with pytest.raises(ForetellError, match="greedy only"):
        engine(tiny).generate(PROMPT, max_new_tokens=4, do_sample=True, method="specee+speculative")
