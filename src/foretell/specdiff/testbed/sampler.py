"""Hand-written rectified-flow Euler sampler with classifier-free guidance ([uncond, cond] batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from foretell.core.errors import ForetellError
from foretell.specdiff.testbed.models import NULL_CLASS, DigitsDiT


@dataclass
class SampleConfig:
    """Sampling settings shared by every method of one comparison."""

    steps: int = 28
    guidance_scale: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ForetellError(f"steps must be >= 1, got {self.steps}")
        if self.guidance_scale < 1.0:
            raise ForetellError(f"guidance_scale must be >= 1 (1 = no guidance), got {self.guidance_scale}")


def make_scheduler(model: DigitsDiT, steps: int):
    """A ``FlowMatchEulerDiscreteScheduler`` with the model's shift, after ``set_timesteps(steps)``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=model.cfg.scheduler_shift)
    sched.set_timesteps(steps)
    return sched


def model_device(model: torch.nn.Module) -> torch.device:
    """The device the model's weights are on."""
    return next(model.parameters()).device


def make_noise(model: DigitsDiT, n: int, seed: int) -> torch.Tensor:
    """The starting noise for ``n`` samples on the model's device; identical for every method and
    every device given the seed (drawn by a CPU generator, then moved once)."""
    c, s = model.cfg.channels, model.cfg.image_size
    noise = torch.randn((n, c, s, s), generator=torch.Generator().manual_seed(seed))
    return noise.to(model_device(model))


def sample_labels(n: int, device=None) -> torch.Tensor:
    """Requested classes 0..9 cycled, so every digit appears (deterministic)."""
    return torch.arange(n, device=device) % 10


@torch.no_grad()
def sample(model: DigitsDiT, noise: torch.Tensor, labels: torch.Tensor, *, scheduler,
           guidance_scale: float = 4.0, step_callback: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Euler-integrate ``noise`` to images with CFG; returns ``[N, C, H, W]`` clamped to [-1, 1].

    Each step calls the transformer once on the ``[uncond, cond]`` batch (2N) with the timestep value
    diffusers' pipelines pass, and applies ``x += (sigma_next - sigma) * (v_u + g (v_c - v_u))``.
    ``scheduler`` is the ``FlowMatchEulerDiscreteScheduler`` whose ``set_timesteps`` was called; its
    ``timesteps``/``sigmas`` define the run (so caches that read it see the same schedule).
    ``step_callback(i, timestep)`` runs before step ``i`` (used to set diffusers cache contexts).
    """
    sigmas = [float(s) for s in scheduler.sigmas]
    timesteps = [float(t) for t in scheduler.timesteps]
    return euler_loop(model, noise, labels, timesteps, sigmas, guidance_scale=guidance_scale,
                      step_callback=step_callback).clamp(-1.0, 1.0)


@torch.no_grad()
def euler_loop(model: DigitsDiT, noise: torch.Tensor, labels: torch.Tensor, timesteps: list[float],
               sigmas: list[float], *, guidance_scale: float,
               step_callback: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """The CFG Euler loop over explicit ``timesteps`` (len N, scheduler units) and ``sigmas`` (len N + 1)."""
    if noise.shape[0] != labels.shape[0]:
        raise ForetellError(f"noise batch {noise.shape[0]} != labels batch {labels.shape[0]}")
    device = model_device(model)  # inputs follow the model, as diffusers pipelines do
    noise, labels = noise.to(device), labels.to(device)
    n = noise.shape[0]
    cond_labels = torch.cat([torch.full_like(labels, NULL_CLASS), labels])
    cond, pooled = model.conditioner(cond_labels)
    x = noise.clone()
    for i, t in enumerate(timesteps):
        if step_callback is not None:
            step_callback(i, float(t))
        ts = torch.full((2 * n,), float(t), dtype=x.dtype, device=device)
        model_t = ts if model.cfg.kind == "sd3" else ts / 1000.0
        v = model.call_transformer(torch.cat([x, x]), model_t, cond, pooled)
        v_u, v_c = v[:n], v[n:]
        v = v_u + guidance_scale * (v_c - v_u)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x
