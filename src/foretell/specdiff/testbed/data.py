"""scikit-learn's 8x8 digits, upscaled to 32x32 single-channel images in [-1, 1]."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

NUM_CLASSES = 10
IMAGE_SIZE = 32


@lru_cache(maxsize=4)
def _digits_cached(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0) * 2.0 - 1.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    return images, labels


def load_digits_images(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``([N, 1, size, size]`` float in [-1, 1], ``[N]`` int64 labels)``.

    The 8x8 originals (grey levels 0..16) are upscaled bilinearly; the tensors are cached, clone them
    before editing in place.
    """
    return _digits_cached(int(size))


def split_indices(n: int, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train/test split of ``range(n)``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]
