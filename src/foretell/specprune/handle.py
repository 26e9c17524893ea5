"""``PruningHandle``: what ``apply`` / ``build_method`` return.

It routes the model's ``predict_action`` through the engine under one policy, keeps the frame
history and the controller input (``observe`` after every env step), raises ``requery_needed``
when the controller switches into fine mode, and collects per-query statistics (LLM-backbone
seconds, analytic MACs against the unpruned sequence, visual tokens kept, mode).
"""

from __future__ import annotations

import statistics

import torch

from foretell.core.errors import ForetellError
from foretell.specprune.engine import PruningPolicy, QueryRecord, run_backbone
from foretell.specprune.frame_diff import FrameHistory
from foretell.specprune.graphs import LayerGraphs


class PruningHandle:
    """A pruning method applied to one VLA; ``remove()`` restores the original model."""

    def __init__(self, adapter, policy: PruningPolicy, name: str, cuda_graphs=False):
        """``cuda_graphs``: True to replay runs of plain layers from CUDA graphs (the model must be on
        a GPU), or a :class:`LayerGraphs` to use (e.g. ``LayerGraphs(backend="emulate")``)."""
        self.adapter = adapter
        self.policy = policy
        self.name = name
        self.graphs = cuda_graphs if isinstance(cuda_graphs, LayerGraphs) else LayerGraphs() if cuda_graphs else None
        if self.graphs is not None:
            self.graphs.check_device(adapter.device)
        cfg = getattr(policy, "cfg", None)              # keep enough frames for the largest frame gap
        self.history = FrameHistory(max_frames=max(8, getattr(cfg, "frame_gap_max", 0) + 2))
        self.records: list[QueryRecord] = []
        self._requery = False
        self._applied = False
        adapter.install(self.predict_action)
        self._applied = True

    # ----------------------------------------------------------------- episode
    def reset_state(self) -> None:
        """Start of an episode: forget frames, controller mode, global set and cached state."""
        self.history.reset_state()
        self.policy.reset_state()
        self._requery = False

    def reset_stats(self) -> None:
        """Forget the collected per-query statistics."""
        self.records = []

    def observe(self, images: dict, executed_action, queue_empty: bool = True) -> None:
        """After every env step: store the frames and feed the executed action to the controller."""
        if not isinstance(images, dict):
            raise ForetellError("observe(images, executed_action): images must be a dict view -> tensor [1,3,H,W]")
        missing = [v for v in self.adapter.views if v not in images]
        if missing:
            raise ForetellError(f"observe: missing camera view(s) {missing}; expected {list(self.adapter.views)}")
        frames = {v: self._frame(v, images[v]) for v in self.adapter.views}
        action = self._executed(executed_action)
        self.history.push(frames, device=self.adapter.device)
        if self.policy.observe(images, action, queue_empty):
            self._requery = True

    def _frame(self, view: str, image) -> torch.Tensor:
        """One camera frame as given to ``observe``: a float tensor [1,3,H,W] or [3,H,W] in [0, 1]."""
        size = self.adapter.image_size
        if not torch.is_tensor(image) and hasattr(image, "__array__"):       # a numpy frame is fine if it fits
            image = torch.as_tensor(image)
        im = image if torch.is_tensor(image) else None
        ok = (im is not None and im.is_floating_point() and im.dim() in (3, 4) and (im.dim() == 3 or im.shape[0] == 1)
              and im.shape[-3] == 3 and (size is None or tuple(im.shape[-2:]) == (size, size)))
        if not ok:
            what = f"{tuple(im.shape)} {str(im.dtype).replace('torch.', '')}" if im is not None else type(image).__name__
            hw = f"{size}, {size}" if size is not None else "H, W"
            raise ForetellError(f"observe: image for view {view!r} is {what}; expected a float tensor [1, 3, {hw}] or "
                                f"[3, {hw}] with values in [0, 1] (the frame passed to predict_action)")
        return im

    def _executed(self, executed_action) -> torch.Tensor:
        """The executed action as a flat float tensor: translation (3), rotation (3) and more."""
        need = self.adapter.action_dim
        try:
            a = torch.as_tensor(executed_action, dtype=torch.float32).flatten().cpu()   # the one host read
        except (TypeError, ValueError, RuntimeError):
            a = None
        if a is None:
            got = f"a {type(executed_action).__name__}"
        elif a.numel() < 6 or (need is not None and a.numel() != need):
            got = f"{a.numel()} value(s)"
        elif not bool(torch.isfinite(a).all()):
            got = "not finite (NaN or inf)"
        else:
            return a
        raise ForetellError(f"observe: executed_action is {got}; expected the {need or '>= 6'} finite numbers of the "
                            f"one action just executed (xyz, rotation, gripper)")

    @property
    def requery_needed(self) -> bool:
        """True when the controller just switched into fine mode (cleared by the next query)."""
        return self._requery

    @property
    def mode(self) -> str:
        return getattr(self.policy, "mode", "coarse")

    # ------------------------------------------------------------------ query
    def predict_action(self, images, instruction_ids, proprio) -> torch.Tensor:
        """Actions [B, chunk, action_dim] with this handle's pruning inside the backbone.

        Runs under ``torch.inference_mode`` (less per-op overhead); the returned tensor is a normal one.
        """
        with torch.inference_mode():
            prep = self.adapter.prepare(images, instruction_ids, proprio)
            if prep.embeds.shape[0] != 1 and type(self.policy) is not PruningPolicy:
                raise ForetellError(f"method {self.name!r} prunes per sample and needs batch size 1 (OpenVLA-OFT also queries with batch 1); got {prep.embeds.shape[0]}")
            hidden, record = run_backbone(self.adapter, prep, self.policy, self.history, graphs=self.graphs)
            self.records.append(record)
            self._requery = False
            actions = self.adapter.decode_actions(hidden)
        return actions.clone()

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict:
        """Aggregate statistics over all queries since construction / ``reset_stats``."""
        recs = self.records
        total_visual = self.adapter.patches_per_view * len(self.adapter.views)
        if not recs:
            return {"method": self.name, "queries": 0, "visual_tokens_kept": None, "visual_tokens_total": total_visual,
                    "llm_macs_fraction": None, "llm_seconds": [], "mode_fraction_fine": None}
        layer_mean = [statistics.fmean(r.visual_per_layer) for r in recs]
        return {
            "method": self.name,
            "queries": len(recs),
            "visual_tokens_kept": statistics.fmean(r.visual_kept for r in recs),
            "visual_tokens_layer_mean": statistics.fmean(layer_mean),
            "visual_tokens_total": total_visual,
            "llm_macs_fraction": sum(r.macs for r in recs) / sum(r.macs_full for r in recs),
            "llm_macs_mean": statistics.fmean(r.macs for r in recs),
            "llm_macs_full_mean": statistics.fmean(r.macs_full for r in recs),
            "llm_seconds": [r.seconds for r in recs],
            "llm_seconds_median": statistics.median(r.seconds for r in recs),
            # CPU time of the calling thread: with torch.set_num_threads(1) this is the backbone's
            # compute time without the waits a shared machine adds (descheduling by other processes)
            "llm_cpu_seconds": [r.cpu_seconds for r in recs],
            "llm_cpu_seconds_median": statistics.median(r.cpu_seconds for r in recs),
            "mode_fraction_fine": sum(r.mode == "fine" for r in recs) / len(recs),
            "reused_tokens_mean": statistics.fmean(r.extra_keys for r in recs),
            "cuda_graphs": dict(self.graphs.counts, kept=self.graphs.kept, capture_seconds=self.graphs.capture_seconds) if self.graphs is not None else None,
        }

    def remove(self) -> None:
        """Restore the model's own ``predict_action`` (idempotent)."""
        if self._applied:
            self.adapter.uninstall()
            self._applied = False
            if self.graphs is not None:
                self.graphs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
