"""The self-speculative pass: K rectified-flow Euler steps of the same model, same noise/prompt/CFG.

The speculative sampler uses the main schedule subsampled to K steps: sigmas at main indices
round(k * N / K), k = 0..K (the same shift as the main run, coarser). Its first evaluation has the
same input and timestep as the main run's first step, so that main step (always a full step) is
reused as speculative step 0 and the pass costs K - 1 extra transformer calls.
"""

from __future__ import annotations

import torch

from foretell.core.errors import ForetellError


def speculative_sigmas(main_sigmas: list[float], k: int) -> list[float]:
    """K + 1 sigmas of the K-step speculative sampler taken from the main schedule (N + 1 sigmas)."""
    n = len(main_sigmas) - 1
    k = max(1, min(k, n))
    return [float(main_sigmas[round(i * n / k)]) for i in range(k + 1)]


def guided_velocity(velocity: torch.Tensor, guidance_scale: float | None) -> torch.Tensor:
    """v = v_u + g (v_c - v_u) for a [uncond, cond] CFG batch; the batch itself without CFG."""
    if guidance_scale is None or guidance_scale <= 1.0:
        return velocity
    if velocity.shape[0] % 2:
        raise ForetellError(f"guidance_scale={guidance_scale} means classifier-free guidance, whose batch is "
                            f"[uncond, cond] (even size); the transformer got a batch of {velocity.shape[0]}: pass "
                            f"guidance_scale=None (or 1) for a loop without CFG")
    v_u, v_c = velocity.chunk(2)
    return v_u + guidance_scale * (v_c - v_u)


def euler_next_input(
    model_input: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float, guidance_scale: float | None
) -> torch.Tensor:
    """The next speculative model input: x + (sigma_next - sigma) * v, re-duplicated for CFG."""
    cfg = guidance_scale is not None and guidance_scale > 1.0
    x = model_input.chunk(2)[0] if cfg else model_input
    v = guided_velocity(velocity, guidance_scale)
    x_next = (x.float() + (sigma_next - sigma) * v.float()).to(model_input.dtype)
    return torch.cat([x_next, x_next]) if cfg else x_next
