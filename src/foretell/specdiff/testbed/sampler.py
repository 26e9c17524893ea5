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
        import math

        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ForetellError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.guidance_scale, (int, float)) or not math.isfinite(self.guidance_scale) \
                or self.guidance_scale < 1.0:
            raise ForetellError(f"guidance_scale must be a finite number >= 1 (1 = no guidance), got {self.guidance_scale!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ForetellError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")


def make_scheduler(model: DigitsDiT, steps: int):
    """A ``FlowMatchEulerDiscreteScheduler`` with the model's shift, after ``set_timesteps(steps)``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ForetellError(f"steps must be an integer >= 1, got {steps!r}")
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
    check_sample_inputs(model, noise, labels, guidance_scale)
    if not hasattr(scheduler, "sigmas") or not hasattr(scheduler, "timesteps"):
        raise ForetellError(f"scheduler must be the FlowMatchEulerDiscreteScheduler of make_scheduler(model, steps), "
                            f"got {type(scheduler).__name__}")
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


def check_sample_inputs(model: DigitsDiT, noise, labels, guidance_scale) -> None:
    """One-line errors for what :func:`sample` cannot run: noise ``[N, C, H, W]`` of the model's shape,
    ``N`` integer digit labels in 0..9 (10 is the model's null class, used only by CFG), a finite
    guidance scale >= 0."""
    import math

    cfg = model.cfg
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if not torch.is_tensor(noise) or noise.dim() != 4 or tuple(noise.shape[1:]) != want or noise.shape[0] < 1:
        got = tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
        raise ForetellError(f"noise has shape {got}; expected [N >= 1, {want[0]}, {want[1]}, {want[2]}] (make_noise)")
    n = noise.shape[0]
    if not torch.is_tensor(labels) or labels.dim() != 1 or labels.shape[0] != n or labels.is_floating_point() \
            or labels.dtype == torch.bool:
        got = f"{tuple(labels.shape)} {str(labels.dtype).replace('torch.', '')}" if torch.is_tensor(labels) \
            else type(labels).__name__
        raise ForetellError(f"labels are {got}; expected an integer tensor [{n}] of digits 0..9 (sample_labels)")
    if labels.device.type == "cpu" and n and not bool(((labels >= 0) & (labels <= 9)).all()):
        raise ForetellError(f"labels must be digits 0..9 (10 is the null class CFG uses), got values "
                            f"{sorted(set(labels.tolist()) - set(range(10)))}")
    if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ForetellError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
