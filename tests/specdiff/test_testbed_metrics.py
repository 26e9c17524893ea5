"""Metrics against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specdiff.testbed import metrics


def test_psnr_of_known_error():
    ref = torch.zeros(2, 1, 16, 16)
    x = ref + 0.1  # MSE 0.01 on a range of 2 -> 10 log10(4 / 0.01)
    assert metrics.psnr(x, ref) == pytest.approx(10 * math.log10(400.0), abs=1e-5)
    two = torch.cat([ref[:1] + 0.25, ref[:1] + 0.5])  # MSE 1/16 and 1/4 -> 18.06 and 12.04 dB, mean over images
    expected = (10 * math.log10(4 * 16) + 10 * math.log10(4 * 4)) / 2
    assert metrics.psnr(two, ref) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr(ref, ref) == math.inf


def test_ssim_identity_constant_case_and_noise_monotonic():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    a, b = 0.5, -0.25  # constant images: SSIM = (2ab + c1) / (a^2 + b^2 + c1)
    c1 = (0.01 * 2) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert got == pytest.approx(expected, rel=1e-9)
    noise = torch.randn(x.shape, generator=g)
    values = [metrics.ssim((x + s * noise).clamp(-1, 1), x) for s in (0.01, 0.1, 0.5)]
    assert 1.0 > values[0] > values[1] > values[2]


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5])
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    with pytest.raises(ForetellError):
        metrics.frechet_distance(a[:1], a)


def test_class_accuracy_is_a_fraction():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 3] = 1.0
            return out

    labels = torch.tensor([3, 3, 1, 2])
    assert metrics.class_accuracy(Fixed(), torch.zeros(4, 1, 32, 32), labels) == 0.5


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ForetellError, match="same shape"):
        metrics.psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
