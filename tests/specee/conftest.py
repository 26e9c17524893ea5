"""Tiny random models and permissive fakes for fast SpecEE tests."""

import pytest
import torch

from foretell.specee.draft import Draft

torch.set_num_threads(1)   # the CI box has 2 shared cores; intra-op threads only add contention here
from tiny_models import make_predictors, tiny_model  # noqa: F401 (the tests import them from here)


class AllTokensDraft(Draft):
    """A fake draft whose scores are constant: with k = vocab every token is a candidate."""

    def __init__(self, vocab: int, k: int):
        self.vocab, self.k = vocab, k
        self.reset_state()

    def reset_state(self):
        self._len = 0

    def feed(self, tokens, states):
        self._len += tokens.numel()
        return torch.linspace(1.0, 0.0, self.vocab), None

    def crop(self, length):
        self._len = length

    def length(self):
        return self._len


@pytest.fixture(scope="session")
def tiny():
    return tiny_model()
