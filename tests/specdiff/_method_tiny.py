"""Tiny random SD3 / FLUX transformers and a hand-written CFG Euler loop for the method tests."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, SD3Transformer2DModel

SIZE = 16  # latent side (SD3: 8x8 = 64 tokens with patch 2; FLUX: 8x8 packed tokens)
TEXT = 5


def tiny_sd3(dual: bool = False, seed: int = 0) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    kwargs = dict(dual_attention_layers=(0,), qk_norm="rms_norm") if dual else {}
    return SD3Transformer2DModel(
        sample_size=SIZE, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4, **kwargs,
    ).eval()


def tiny_flux(guidance_embeds: bool = False, seed: int = 0, in_channels: int = 4) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8), guidance_embeds=guidance_embeds,
    ).eval()


def flux_ids(side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.zeros(side, side, 3)
    img[..., 1] = torch.arange(side)[:, None]
    img[..., 2] = torch.arange(side)[None]
    return img.reshape(-1, 3), torch.zeros(TEXT, 3)


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def inputs(model, batch: int = 1, seed: int = 0, cfg: bool = True) -> dict:
    """Noise and (CFG-batched [uncond, cond]) conditioning for ``batch`` samples."""
    gen = torch.Generator().manual_seed(seed)
    rows = 2 * batch if cfg else batch
    if isinstance(model, SD3Transformer2DModel):
        x = torch.randn(batch, 4, SIZE, SIZE, generator=gen)
        cond = dict(encoder_hidden_states=torch.randn(rows, TEXT, 32, generator=gen),
                    pooled_projections=torch.randn(rows, 64, generator=gen))
    else:
        x = torch.randn(batch, 64, 4, generator=gen)
        img_ids, txt_ids = flux_ids()
        cond = dict(encoder_hidden_states=torch.randn(rows, TEXT, 32, generator=gen),
                    pooled_projections=torch.randn(rows, 32, generator=gen), img_ids=img_ids, txt_ids=txt_ids)
        if model.config.guidance_embeds:
            cond["guidance"] = torch.full((rows,), 3.5)
    return {"x": x, "cond": cond}


def timestep_arg(model, t: torch.Tensor, rows: int) -> torch.Tensor:
    t = t.expand(rows)
    return t if isinstance(model, SD3Transformer2DModel) else t / 1000


@torch.no_grad()
def sample(model, sched, data: dict, steps: int = 8, guidance: float | None = 3.0) -> torch.Tensor:
    """The rectified-flow Euler loop with CFG as diffusers' SD3 pipeline does it."""
    cfg = guidance is not None and guidance > 1
    x = data["x"].clone()
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        xin = torch.cat([x, x]) if cfg else x
        v = model(hidden_states=xin, timestep=timestep_arg(model, t, xin.shape[0]), return_dict=False, **data["cond"])[0]
        if cfg:
            v_u, v_c = v.chunk(2)
            v = v_u + guidance * (v_c - v_u)
        x = sched.step(v, t, x).prev_sample
    return x


def one_thread():
    """Generator for an autouse fixture: tiny models run fastest (and share the CPU best) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
