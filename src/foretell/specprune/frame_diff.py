"""Local, frame-difference rule: patches that stayed the same since T frames ago are prunable.

Similarity is the cosine between the raw RGB pixels of a patch in the current frame and the same
patch T frames back. Among patches with cosine >= threshold, the ``cap`` most similar are "static"
(prunable); every other patch is "dynamic" and always kept.
"""

from __future__ import annotations

from collections import deque

import torch


def patch_similarity(current: torch.Tensor, previous: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cosine similarity per patch between images [3,H,W] -> [num_patches], or batches [V,3,H,W] -> [V, num_patches].

    Patches are numbered row-major, the same order as the model's patch tokens. Two all-zero
    (black) patches count as identical (similarity 1), not as changed.
    """
    single = current.dim() == 3
    cur = current.reshape(-1, *current.shape[-3:]).float()
    prev = previous.reshape(-1, *previous.shape[-3:]).float()
    v, c, h, w = cur.shape
    p = int(patch_size)

    def per_patch(x):  # sum over channels and the pixels of each patch -> [V, h/p * w/p]
        return x.reshape(v, c, h // p, p, w // p, p).sum(dim=(1, 3, 5)).reshape(v, -1)

    dot = per_patch(cur * prev)
    sq_cur, sq_prev = per_patch(cur * cur), per_patch(prev * prev)
    sim = dot / (sq_cur * sq_prev).sqrt().clamp_min(1e-12)
    both_black = (sq_cur <= 1e-12) & (sq_prev <= 1e-12)
    sim = torch.where(both_black, torch.ones_like(sim), sim)
    return sim[0] if single else sim


def static_mask(similarity: torch.Tensor, threshold: float, cap: int) -> torch.Tensor:
    """Bool mask (same shape as ``similarity``, [N] or [V, N]): True for the at most ``cap`` most
    similar patches (per row) among those with similarity >= ``threshold``."""
    passed = similarity >= threshold
    if cap <= 0:
        return torch.zeros_like(passed)
    take = min(int(cap), similarity.shape[-1])
    scores = torch.where(passed, similarity, torch.full_like(similarity, -2.0))
    idx = torch.topk(scores, take, dim=-1, sorted=False).indices
    mask = torch.zeros_like(passed).scatter_(-1, idx, True)
    return mask & passed


class FrameHistory:
    """The last few observed frames per camera view (explicit state, cleared by ``reset_state``)."""

    def __init__(self, max_frames: int = 8):
        self.max_frames = max_frames
        self.frames: dict[str, deque] = {}

    def reset_state(self) -> None:
        self.frames = {}

    def push(self, images: dict, device=None) -> None:
        """Store one observation (dict view -> [1,3,H,W] or [3,H,W] in [0, 1]) as float32 copies on
        ``device`` (default: the CPU; the pruning handle passes the model's device)."""
        device = torch.device("cpu") if device is None else device
        for view, im in images.items():
            q = self.frames.setdefault(view, deque(maxlen=self.max_frames))
            q.append(im.detach().reshape(im.shape[-3:]).to(device, torch.float32, copy=True))

    def frame_back(self, view: str, current: torch.Tensor, gap: int) -> torch.Tensor | None:
        """The frame ``gap`` steps before ``current`` (the oldest stored if fewer), on ``current``'s
        device; None if none.

        If the newest stored frame is the current one, it is not counted as a past frame.
        """
        cur = current.detach().reshape(current.shape[-3:]).float()
        past = [p.to(cur.device) for p in self.frames.get(view, ())]  # no copy when already there
        if cur.device.type == "cpu" or len(past) < 2:  # a host compare (on a GPU only with one stored frame)
            if past and torch.equal(past[-1], cur):
                past = past[:-1]
            return _back(past, gap) if past else None
        return frame_back_on_device(past, cur, gap)


def _back(past: list, gap: int) -> torch.Tensor:
    return past[-gap] if len(past) >= gap else past[0]


def frame_back_on_device(past: list, current: torch.Tensor, gap: int) -> torch.Tensor:
    """``FrameHistory.frame_back`` for two or more stored frames without reading the device: both
    candidates (newest frame counted or not) are known on the host, the device picks one."""
    counted, skipped = _back(past, gap), _back(past[:-1], gap)
    if counted is skipped or past[-1].shape != current.shape:
        return counted
    return torch.where((past[-1] == current).all(), skipped, counted)
