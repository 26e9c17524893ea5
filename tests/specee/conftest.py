"""Fixtures of the SpecEE tests (the tiny models and fakes themselves are in tiny_models.py)."""

import pytest
import torch

torch.set_num_threads(1)   # the CI box has 2 shared cores; intra-op threads only add contention here
from tiny_models import tiny_model


@pytest.fixture(scope="session")
def tiny():
    return tiny_model()
