"""Quality metrics: PSNR and SSIM against the full-compute samples, class accuracy and Frechet distance."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from foretell.core.errors import ForetellError

DATA_RANGE = 2.0   # images live in [-1, 1]


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = DATA_RANGE) -> float:
    """Mean over images of ``10 log10(range^2 / MSE)`` in dB; ``inf`` when every image is identical."""
    _check_pair(x, ref)
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1)
    if bool((mse == 0).all()):
        return math.inf
    vals = 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(1e-20))
    return float(vals.mean())


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = DATA_RANGE, window: int = 11,
         sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004): Gaussian window 11/1.5, K1=0.01, K2=0.03, valid region, per channel."""
    _check_pair(x, ref)
    if min(x.shape[-2:]) < window:
        raise ForetellError(f"SSIM needs images of at least {window}x{window}, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(x.device).expand(c, 1, window, window).contiguous()
    x, ref = x.double(), ref.double()
    blur = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(ref)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(ref * ref) - mu_y ** 2
    sxy = blur(x * ref) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def class_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction in [0, 1] of images the classifier assigns to the requested class."""
    device = _device_of(classifier, images)  # images go to the classifier, wherever they were made
    with torch.no_grad():
        pred = classifier(images.to(device).float()).argmax(1)
    return float((pred == labels.to(pred.device)).float().mean())


def classifier_features(classifier, images: torch.Tensor) -> np.ndarray:
    """Penultimate-layer features (float64 numpy) used by :func:`frechet_distance`."""
    device = _device_of(classifier, images)
    with torch.no_grad():
        return classifier.features(images.to(device).float()).double().cpu().numpy()


def _device_of(module, fallback: torch.Tensor) -> torch.device:
    """The device of ``module``'s weights (``fallback``'s device for a module without any)."""
    weight = next(module.parameters(), None) if hasattr(module, "parameters") else None
    return weight.device if weight is not None else fallback.device


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between two feature sets (FID formula)."""
    from scipy import linalg

    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ForetellError("Frechet distance needs at least 2 samples per set")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    s_a, s_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-singular covariances (few samples) are expected here
        covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        eps = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def _check_pair(x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.shape != ref.shape or x.dim() != 4:
        raise ForetellError(f"expected two [N, C, H, W] tensors of the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
