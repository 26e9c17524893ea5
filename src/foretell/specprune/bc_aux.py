"""Training-only auxiliary supervision for behaviour cloning from pixels (privileged sim state).

Behaviour cloning of a from-scratch VLA on a few hundred CPU steps is starved of signal: the
action loss says *that* the gripper should move, not *which* pixels show the named block. Two
dense auxiliary targets, computed from the simulator state that the expert sees anyway, tell the
backbone where to look; both heads are used only in training and are not part of the shipped
model (inference, the token layout and pruning are unchanged):

* ``masks``: per camera view and per patch, the fraction of the patch covered by the *target*
  block and by the *target* pad (the ones the instruction names) -- a grounding/segmentation
  target on the visual tokens as they enter the backbone (vision encoder + FiLM + projector), so
  target-ness is available from layer 0 on, where the action slots and the pruning scores look;
* ``rel``: the target block's and target pad's position relative to the gripper (and the block's
  yaw error modulo 90 degrees) -- regressed from the mean of the action slots' final states.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from foretell.specprune.sim import render
from foretell.specprune.sim.env import wrap_quarter
from foretell.specprune.sim.task import BLOCK_HALF, PAD_HALF

REL_DIM = 5
# Typical spread of each relative target on the expert's demonstrations; the regression is on
# targets divided by these, so every dimension weighs about the same as a unit-variance target.
REL_SCALE = (0.15, 0.15, 0.5, 0.5, 0.5)


def relative_target(state) -> np.ndarray:
    """[block dx, block dy, block yaw error / (pi/4), pad dx, pad dy] relative to the gripper."""
    lay, g = state.layout, state.gripper_xyz
    b = lay.target_block
    block, pad = state.block_xy[b] - g[:2], lay.pad_xy[lay.target_pad] - g[:2]
    yaw = float(wrap_quarter(state.block_yaw[b] - state.gripper_yaw)) / (np.pi / 4)
    return np.array([block[0], block[1], yaw, pad[0], pad[1]], dtype=np.float32)


def target_masks(state, image_size: int, patch_size: int) -> dict:
    """view -> float16 [2, grid, grid]: patch coverage of the target block (0) and target pad (1)."""
    lay, g, yaw = state.layout, state.gripper_xyz, state.gripper_yaw
    b, p = lay.target_block, lay.pad_xy[lay.target_pad]
    bx, by = state.block_xy[b]
    top = render._block_top(state, b)
    planes = {"third": (render._third_plane(image_size, top), render._third_plane(image_size, 0.0)),
              "wrist": (render._wrist_plane(image_size, top, g, yaw), render._wrist_plane(image_size, 0.0, g, yaw))}
    grid = image_size // patch_size
    out = {}
    for view, (block_plane, table_plane) in planes.items():
        m = np.stack([render._in_square(*block_plane, bx, by, state.block_yaw[b], BLOCK_HALF),
                      render._in_square(*table_plane, p[0], p[1], 0.0, PAD_HALF)]).astype(np.float32)
        out[view] = m.reshape(2, grid, patch_size, grid, patch_size).mean(axis=(2, 4)).astype(np.float16)
    return out


class AuxHeads(nn.Module):
    """The two training-only heads: per-patch target segmentation and relative-position regression."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.seg = nn.Linear(hidden_size, 2)
        self.rel = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 128), nn.GELU(), nn.Linear(128, REL_DIM))

    def losses(self, embeds: torch.Tensor, hidden: torch.Tensor, layout, masks: dict,
               rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(segmentation BCE on the visual tokens' backbone *inputs*, relative-position MSE per
        target dimension [REL_DIM] on the action slots' final hidden states)."""
        seg = hidden.new_zeros(())
        for view, sl in layout.views.items():
            logits = self.seg(embeds[:, sl])                      # [B, N, 2]
            want = masks[view].flatten(2).transpose(1, 2).to(logits.dtype)  # [B, N, 2]
            seg = seg + nn.functional.binary_cross_entropy_with_logits(logits, want, pos_weight=hidden.new_tensor(4.0))
        pred = self.rel(hidden[:, layout.actions].mean(dim=1))
        want = rel.to(pred.dtype) / pred.new_tensor(REL_SCALE)
        return seg / len(layout.views), (pred - want).pow(2).mean(dim=0)


def run_with_action_attention(model, embeds: torch.Tensor, layout, layers: tuple, heads: int):
    """The VLA's backbone pass (same layers as ``OFTStyleVLA.run_backbone``) that also returns, at
    ``layers``, the softmax attention of the action slots over all tokens for the first ``heads``
    heads: [B, heads, n_action_slots, S] each. Training only."""
    from transformers.models.llama.modeling_llama import rotate_half

    b, s, _ = embeds.shape
    pos = torch.arange(s, device=embeds.device).unsqueeze(0)
    cos, sin = model.backbone.rotary_emb(embeds, position_ids=pos)
    h, maps = embeds, []
    acts = layout.actions
    for i, layer in enumerate(model.backbone.layers):
        if i in layers:
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            hd, groups = attn.head_dim, attn.num_key_value_groups
            q = attn.q_proj(x[:, acts]).view(b, -1, attn.config.num_attention_heads, hd)[:, :, :heads].transpose(1, 2)
            k = attn.k_proj(x).view(b, s, -1, hd).transpose(1, 2)
            q = q * cos[:, None, acts] + rotate_half(q) * sin[:, None, acts]
            k = k * cos[:, None] + rotate_half(k) * sin[:, None]
            k = k.repeat_interleave(groups, dim=1)[:, :heads]
            maps.append(torch.softmax(q @ k.transpose(-1, -2) * attn.scaling, dim=-1))
        h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
    return model.backbone.norm(h), maps


ROUTED_HEADS = 3   # heads 0, 1, 2 of the supervised layers: target block, target pad, proprio token


def attention_target_loss(maps: list, layout, masks: dict) -> torch.Tensor:
    """-log of the attention mass the action slots put where the expert's decision comes from:
    head 0 on the target block's patches, head 1 on the target pad's (weighted by how much of each
    patch the target covers), head 2 on the proprio token; averaged over layers, heads and slots."""
    b, s = maps[0].shape[0], maps[0].shape[-1]
    weight = maps[0].new_zeros(b, ROUTED_HEADS, s)
    for view, sl in layout.views.items():
        weight[:, :2, sl] = masks[view].flatten(2).to(weight.dtype)
    weight[:, 2, layout.proprio] = 1.0
    loss = maps[0].new_zeros(())
    for p in maps:
        heads = min(ROUTED_HEADS, p.shape[1])                         # a model with fewer heads routes fewer
        mass = (p[:, :heads] * weight[:, :heads, None]).sum(-1)      # [B, heads, slots]
        loss = loss - torch.log(mass + 1e-3).mean()
    return loss / len(maps)
