"""SpecPrune-VLA's pruning policy: static (frame difference + layer-0/1 attention + global) and
dynamic layer-level pruning, steered by the action-aware controller.

Per query, per view v with n patches (k_v etc. are the config fractions scaled to n):
* dynamic_v = patches not among the ``cap`` most similar (cos >= threshold) to the frame T back;
* after layer 0: keep dynamic_v U top(layer0_multiplier * k_v) by layer-0 instruction attention U global_v;
* after layer 1: keep dynamic_v U top k_v by layer-1 attention (rows mapped to their ORIGINAL
  patch through ``TokenState.origin``) U first k_v of the layer-0 list U global_v;
* optional ``token_budget``: cap the visual tokens kept after layer 1 (highest layer-1 attention);
* global_v for the next query: top k_global of the last layer's instruction attention;
* dynamic layer pruning (coarse mode only): EMA of rank weights of the attention that non-visual
  tokens pay at ``importance_layers``; at ``drop_layers`` keep ``drop_keep_fraction`` of the
  visual tokens by that importance (pruned before the drop layer runs), never fewer than
  ``drop_floor`` of all visual tokens.
Attention is materialised only at layers 0, 1, the last layer (global) and the importance layers.
"""

from __future__ import annotations

import torch

from foretell.specprune.config import SpecPruneConfig, frame_gap, per_view
from foretell.specprune.controller import COARSE, FINE, ActionAwareController
from foretell.specprune.engine import PruningPolicy, TokenState
from foretell.specprune.frame_diff import patch_similarity, static_mask
from foretell.specprune.importance import rank_weights, received_attention


class SpecPrunePolicy(PruningPolicy):
    """Explicit per-episode state: controller mode, speed since the last query, global set, importance."""

    name = "specprune"

    def __init__(self, cfg: SpecPruneConfig, adapter, num_layers: int):
        self.cfg = cfg
        self.adapter = adapter
        self.num_layers = num_layers
        self.importance_layers, self.drop_layers = cfg.resolve_layers(num_layers)
        self.controller = ActionAwareController(cfg)
        self.reset_state()

    def reset_state(self) -> None:
        self.controller.reset_state()
        self.speed_xyz = torch.zeros(3)
        self.global_origins: dict[int, torch.Tensor] = {}
        self.importance: torch.Tensor | None = None
        self._info = {}

    @property
    def mode(self) -> str:
        return self.controller.mode if self.cfg.use_controller else COARSE

    def observe(self, images, executed_action, queue_empty: bool) -> bool:
        a = torch.as_tensor(executed_action, dtype=torch.float32).flatten()
        if a.numel() >= 3:
            self.speed_xyz += a[:3]
        entered = self.controller.update(a, queue_empty=queue_empty)
        return bool(entered and self.cfg.requery_on_fine)

    # ------------------------------------------------------------------ static pruning
    def begin(self, state: TokenState, prep, history):
        cfg, n = self.cfg, self.adapter.patches_per_view
        dev = state.origin.device
        self._empty = torch.empty(0, dtype=torch.long, device=dev)
        fine = self.mode == FINE
        self._fine = fine
        gap = frame_gap(float(self.speed_xyz.norm()), cfg)
        self.speed_xyz = torch.zeros(3)
        cap = int(round((cfg.static_cap_fine if fine else cfg.static_cap_coarse) * n))
        self.dynamic: dict[int, torch.Tensor] = {}
        for vi, (view, sl) in enumerate(prep.layout.views.items()):
            current = prep.images[view][0].detach().float().cpu()
            prev = history.frame_back(view, current, gap) if (history is not None and cfg.use_frame_diff) else None
            if not cfg.use_frame_diff:
                dyn = torch.zeros(n, dtype=torch.bool)
            elif prev is None:
                dyn = torch.ones(n, dtype=torch.bool)  # no past frame yet: nothing is known to be static
            else:
                sim = patch_similarity(current, prev, self.adapter.patch_size)
                dyn = ~static_mask(sim, cfg.similarity_threshold, cap)
            self.dynamic[vi] = (sl.start + torch.nonzero(dyn).flatten()).to(dev)
        self.k = {vi: per_view(cfg.topk_fine if fine else cfg.topk_coarse, vi, n) for vi in self.dynamic}
        self.kg = {vi: per_view(cfg.global_topk, vi, n) for vi in self.dynamic}
        if self.importance is None or self.importance.numel() != prep.layout.length:
            self.importance = torch.zeros(prep.layout.length, device=dev)
        self.layer0_lists: dict[int, torch.Tensor] = {}
        self.next_global: dict[int, torch.Tensor] = {}
        self._visual_kept = None
        self._instr_rows_orig = torch.arange(prep.layout.instruction.start + min(cfg.instruction_skip, max(prep.layout.instruction.stop - prep.layout.instruction.start - 1, 0)),
                                             prep.layout.instruction.stop, device=dev)
        return None

    def _dynamic_layers_on(self) -> bool:
        return self.cfg.use_dynamic_layers and not self._fine

    def query_rows(self, layer_idx, state):
        scoring = layer_idx == 0 or (layer_idx == 1 and self.cfg.rescore_layer1)
        last = layer_idx == self.num_layers - 1 and self.cfg.use_global
        importance = self._dynamic_layers_on() and layer_idx in self.importance_layers
        if not (scoring or last or importance):
            return None
        if importance:  # all non-visual rows (the instruction rows are among them)
            rows = torch.nonzero(state.row_kinds < 0).flatten()
        else:
            rows = torch.nonzero(torch.isin(state.origin, self._instr_rows_orig)).flatten()
        self._instr_sel = torch.nonzero(torch.isin(state.origin[rows], self._instr_rows_orig)).flatten()
        return rows

    def _view_scores(self, state: TokenState, scores: torch.Tensor, vi: int):
        """(origins, scores) of the current rows of view ``vi``, best first."""
        rows = state.view_rows(vi)
        s = scores[rows]
        order = torch.argsort(s, descending=True)
        return state.origin[rows][order], s[order]

    def after_layer(self, layer_idx, state, probs, rows):
        cfg = self.cfg
        keep = None
        instr_scores = received_attention(probs, self._instr_sel) if probs is not None else None
        if probs is not None and self._dynamic_layers_on() and layer_idx in self.importance_layers:
            self._update_importance(state, received_attention(probs))
        if layer_idx == 0:
            kept = []
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)
                self.layer0_lists[vi] = origins
                top = origins[: cfg.layer0_multiplier * self.k[vi]]
                kept += [self.dynamic[vi], top, self.global_origins.get(vi, self._empty)]
            keep_origins = torch.unique(torch.cat(kept))
            if not cfg.rescore_layer1:
                keep_origins = self._apply_budget(state, keep_origins, instr_scores)
                self._visual_kept = int(keep_origins.numel())
            keep = state.keep_rows_for(keep_origins)
        elif layer_idx == 1 and cfg.rescore_layer1:
            kept = []
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)  # origins, not row numbers
                kept += [self.dynamic[vi], origins[: self.k[vi]], self.layer0_lists[vi][: self.k[vi]],
                         self.global_origins.get(vi, self._empty)]
            keep_origins = torch.unique(torch.cat(kept))
            keep_origins = self._apply_budget(state, keep_origins, instr_scores)
            self._visual_kept = int(keep_origins.numel())
            keep = state.keep_rows_for(keep_origins)
        if layer_idx == self.num_layers - 1 and cfg.use_global and instr_scores is not None:
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)
                self.next_global[vi] = origins[: self.kg[vi]]
        if self._dynamic_layers_on() and (layer_idx + 1) in self.drop_layers and keep is None:
            keep = self._drop_by_importance(state)
        return keep

    def _apply_budget(self, state: TokenState, keep_origins: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        budget = self.cfg.token_budget
        if budget is None or keep_origins.numel() <= budget:
            return keep_origins
        rows = torch.nonzero(torch.isin(state.origin, keep_origins) & (state.row_kinds >= 0)).flatten()
        best = rows[torch.argsort(scores[rows], descending=True)[:budget]]
        return state.origin[best]

    def _update_importance(self, state: TokenState, received: torch.Tensor) -> None:
        vis = torch.nonzero(state.row_kinds >= 0).flatten()
        if vis.numel() == 0:
            return
        w = rank_weights(received[vis])
        a = self.cfg.importance_alpha
        idx = state.origin[vis]
        self.importance[idx] = (1 - a) * self.importance[idx] + a * w

    def _drop_by_importance(self, state: TokenState):
        vis = torch.nonzero(state.row_kinds >= 0).flatten()
        total = int((state.kinds >= 0).sum())
        floor = int(round(self.cfg.drop_floor * total))
        target = max(int(round(self.cfg.drop_keep_fraction * vis.numel())), min(floor, vis.numel()))
        if target >= vis.numel():
            return None
        imp = self.importance[state.origin[vis]]
        best = vis[torch.argsort(imp, descending=True)[:target]]
        return state.keep_rows_for(state.origin[best])

    def end(self, state):
        if self.cfg.use_global:
            self.global_origins = self.next_global
        self._info = {"mode": FINE if self._fine else COARSE,
                      "visual_kept": self._visual_kept if self._visual_kept is not None else state.visual_count()}

    def query_info(self) -> dict:
        return dict(self._info)
