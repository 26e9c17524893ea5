"""Draft trees for lossless speculative decoding: the chain plus side leaves per depth, verified in
one pass with a tree mask; rows off the accepted path leave the KV cache."""

import argparse

import pytest
import torch

from tiny_models import PROMPT, assert_cache_is_teacher_forced, hf_greedy, make_predictors, varied_model
from foretell.core.errors import ForetellError
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import Draft, DraftHead, HeadDraft
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.kv import tree_block_mask
from foretell.specee.speculative import speculative_decode
from foretell.specee.tree import DraftTree, parse_tree


@pytest.fixture(scope="module")
def tiny():
    return varied_model()


class RunnerUpDraft(Draft):
    """Knows the target's greedy continuation but always ranks it second: a chain never accepts a
    draft token, a tree with a side leaf at depth 1 accepts one every round."""

    def __init__(self, ref: list[int], vocab: int, k: int = 4):
        self.ref, self.vocab, self.k = ref, vocab, k
        self.reset_state()

    def reset_state(self):
        self._len = 0

    def feed(self, tokens, states):
        self._len += tokens.numel()
        right = self.ref[self._len + 1]                       # fed positions 1..L predict position L+1
        scores = torch.zeros(self.vocab)
        scores[right] = 1.0
        scores[(right + 1) % self.vocab] = 2.0
        return scores, None

    def crop(self, length):
        self._len = length

    def length(self):
        return self._len


def test_tree_mask_and_walk():
    tree = DraftTree.build(torch.tensor([7]), torch.tensor([10, 11, 12]), [torch.tensor([20, 21]), torch.tensor([30])])
    assert tree.parents == [-1, 0, 1, 2, 0, 0, 1]
    assert tree.depths == [0, 1, 2, 3, 1, 1, 2]
    seen = tree_block_mask(tree.ancestors("cpu"), past_len=2, n_pending=0, dtype=torch.float32, device="cpu")[0, 0] == 0
    assert seen[:, :2].all()                                  # every row sees the cache
    assert seen[:, 2:].tolist() == [
        [1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 1]]
    #                  row:  0   1   2   3   4   5   6
    assert tree.accept([10, 11, 12, 99, 0, 0, 0]) == ([0, 1, 2, 3], [10, 11, 12, 99])   # whole chain + bonus
    assert tree.accept([21, 0, 0, 0, 0, 55, 0]) == ([0, 5], [21, 55])                   # side leaf at depth 1
    assert tree.accept([10, 30, 0, 0, 0, 0, 66]) == ([0, 1, 6], [10, 30, 66])           # side leaf at depth 2
    assert tree.accept([42, 0, 0, 0, 0, 0, 0]) == ([0], [42])                           # nothing accepted


def tree_engine(tiny, draft, tree, gamma=3):
    return SpecEE(tiny, make_predictors(tiny, k=4), draft, SpecEEConfig(k=4, gamma=gamma, online=False, tree=tree))


@pytest.mark.parametrize("tree", [(1,), (2, 1), (3, 3, 3)])
def test_tree_accepts_runners_up_and_stays_lossless(tiny, tree):
    n = 40
    ref = hf_greedy(tiny, n + 8)
    chain = tree_engine(tiny, RunnerUpDraft(ref[0].tolist(), 256), ())
    out = chain.generate(PROMPT, max_new_tokens=n, eos_token_id=None, method="speculative")
    assert torch.equal(out, ref[:, : PROMPT.shape[1] + n])
    assert max(chain.last_stats.emitted[1:]) == 1             # the chain never accepts a draft token
    ee = tree_engine(tiny, RunnerUpDraft(ref[0].tolist(), 256), tree)
    out = ee.generate(PROMPT, max_new_tokens=n, eos_token_id=None, method="speculative")
    assert torch.equal(out, ref[:, : PROMPT.shape[1] + n])
    assert ee.last_stats.emitted[1:-1] == [2] * (len(ee.last_stats.emitted) - 2)   # side leaf + bonus each round


def test_cache_after_tree_rounds_equals_teacher_forced_pass(tiny):
    acc = decoder_access(tiny)
    torch.manual_seed(0)
    ee = tree_engine(tiny, HeadDraft(DraftHead(acc, torch.arange(256)), k=4), (3, 2, 1))
    out = ee.generate(PROMPT, max_new_tokens=50, eos_token_id=None, method="speculative")
    assert torch.equal(out, hf_greedy(tiny, 50))
    assert ee.stepper.num_tokens == out.shape[1] - 1
    assert_cache_is_teacher_forced(tiny, ee.stepper, out, values=True)


def test_tree_errors(tiny):
    ref = hf_greedy(tiny, 30)[0].tolist()
    with pytest.raises(ForetellError, match="at most gamma=2 depths"):
        tree_engine(tiny, RunnerUpDraft(ref, 256), (1, 1, 1), gamma=2)
    with pytest.raises(ForetellError, match="0..8 side leaves"):
        tree_engine(tiny, RunnerUpDraft(ref, 256), (9,))
    with pytest.raises(ForetellError, match="sequence of side-leaf counts"):
        tree_engine(tiny, RunnerUpDraft(ref, 256), ("a",))
    ee = tree_engine(tiny, RunnerUpDraft(ref, 256), (2,))
    with pytest.raises(ForetellError, match="checked exits verify a chain"):
        speculative_decode(ee.acc, ee.stepper, ee.draft, PROMPT, max_new_tokens=4, rule=ee.rule(merged=True),
                           tree=(2,), check=True)
    small = SpecEE(tiny, make_predictors(tiny, k=2), HeadDraft(DraftHead(decoder_access(tiny), torch.arange(3)), k=4),
                   SpecEEConfig(k=2, gamma=2, online=False, tree=(3,)))
    with pytest.raises(ForetellError, match="the draft scores 3 tokens, fewer than the 4 candidates"):
        small.generate(PROMPT, max_new_tokens=4, method="speculative")
    assert parse_tree("3,1") == (3, 1) and parse_tree("chain") == () and parse_tree("0") == ()
    for bad in ("x", "9", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tree(bad)


def test_merged_verify_over_a_tree(tiny):
    """``specee+speculative`` verifies the tree too: without exits it is the lossless tree and takes
    the side leaves (with exits on every verify pass: ``test_engine``, whose default tree is (2,))."""
    n = 40
    ref = hf_greedy(tiny, n + 8)
    never = SpecEE(tiny, make_predictors(tiny, k=4), RunnerUpDraft(ref[0].tolist(), 256),
                   SpecEEConfig(k=4, gamma=3, online=False, tree=(1,), threshold=1.0))
    out = never.generate(PROMPT, max_new_tokens=n, eos_token_id=None, method="specee+speculative")
    assert torch.equal(out, ref[:, : PROMPT.shape[1] + n])
    assert never.last_stats.emitted[1:-1] == [2] * (len(never.last_stats.emitted) - 2)
