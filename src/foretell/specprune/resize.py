"""Progressive resizing for behaviour cloning: carry a VLA and its AdamW state to a new image size.

The conv stem, FiLM, coordinate embedding and backbone of :class:`OFTStyleVLA` do not depend on
the image size (pixel-coordinate channels and patch centres are normalised to [-1, 1] and rebuilt
from the config); only the learned patch-position table has one row per patch. Resizing builds the
model for the new size, copies every parameter and resamples that table bilinearly on its 2-D grid
(as ViTs do when fine-tuned at a higher resolution). The optimizer's moments are carried the same
way, so training continues without Adam's restart transient.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from foretell.core.errors import ForetellError

GRID_TABLES = ("vision.patch_pos",)   # parameters with one row per patch (row-major grid)


def resample_grid(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Bilinearly resample a row-major per-patch table ``[g*g, D]`` to ``[grid*grid, D]``."""
    g = math.isqrt(table.shape[0])
    if g * g != table.shape[0]:
        raise ForetellError(f"a per-patch table must have a square number of rows, got {table.shape[0]}")
    if g == grid:
        return table.clone()
    img = table.t().reshape(1, table.shape[1], g, g)
    out = torch.nn.functional.interpolate(img, size=(grid, grid), mode="bilinear", align_corners=False)
    return out.reshape(table.shape[1], grid * grid).t().contiguous()


def resized_vla(model, image_size: int):
    """A new :class:`OFTStyleVLA` for ``image_size`` px images carrying ``model``'s weights."""
    from foretell.specprune.model import OFTStyleVLA

    cfg = dataclasses.replace(model.config, image_size=int(image_size))
    new = OFTStyleVLA(cfg)
    grid = cfg.image_size // cfg.patch_size
    state = {k: (resample_grid(v, grid) if k in GRID_TABLES else v) for k, v in model.state_dict().items()}
    new.load_state_dict(state)
    return new.train(model.training)


def carry_optimizer_state(old_opt, old_named: dict, new_opt, new_named: dict) -> None:
    """Copy AdamW state from ``old_opt`` (parameters ``old_named``: name -> tensor) to ``new_opt``
    (``new_named``), resampling the per-patch tables' moments like the tables themselves."""
    for name, new_p in new_named.items():
        state = old_opt.state.get(old_named[name])
        if not state:
            continue
        carried = {}
        for key, val in state.items():
            if torch.is_tensor(val) and val.dim() == 2 and val.shape != new_p.shape:
                val = resample_grid(val, math.isqrt(new_p.shape[0]))
                if key == "exp_avg_sq":
                    val = val.clamp_min(0.0)
            carried[key] = val.clone() if torch.is_tensor(val) else val
        new_opt.state[new_p] = carried
