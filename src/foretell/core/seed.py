"""Seeding every random number generator a run touches, so runs are reproducible."""

import os
import random

import numpy as np


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) with ``seed`` and return it."""
    if not isinstance(seed, int) or seed < 0:
        from foretell.core.errors import ForetellError

        raise ForetellError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed
