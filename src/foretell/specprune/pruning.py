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
        self.speed_xyz = [0.0, 0.0, 0.0]  # sum of executed xyz deltas since the last query
        self.global_origins: dict[int, torch.Tensor] = {}
        self.importance: torch.Tensor | None = None
        self._info = {}

    @property
    def mode(self) -> str:
        return self.controller.mode if self.cfg.use_controller else COARSE

    def observe(self, images, executed_action, queue_empty: bool) -> bool:
        a = torch.as_tensor(executed_action, dtype=torch.float32).flatten()
        if a.numel() >= 3:
            self.speed_xyz = [s + float(d) for s, d in zip(self.speed_xyz, a[:3].tolist())]
        entered = self.controller.update(a, queue_empty=queue_empty)
        return bool(entered and self.cfg.requery_on_fine)

    # ------------------------------------------------------------------ static pruning
    def begin(self, state: TokenState, prep, history):
        cfg, n = self.cfg, self.adapter.patches_per_view
        dev = state.origin.device
        self._empty = torch.empty(0, dtype=torch.long, device=dev)
        fine = self.mode == FINE
        self._fine = fine
        gap = frame_gap(sum(d * d for d in self.speed_xyz) ** 0.5, cfg)
        self.speed_xyz = [0.0, 0.0, 0.0]
        cap = int(round((cfg.static_cap_fine if fine else cfg.static_cap_coarse) * n))
        self.dynamic: dict[int, torch.Tensor] = {}
        views = list(prep.layout.views.items())
        dyn = torch.zeros(len(views), n, dtype=torch.bool)
        self._unknown: dict[int, int] = {}  # view -> number of patches to keep by attention (no past frame)
        if cfg.use_frame_diff:
            current = [prep.images[v][0].detach().float().cpu() for v, _ in views]
            prev = [history.frame_back(v, c, gap) if history is not None else None for (v, _), c in zip(views, current)]
            have = [i for i, p in enumerate(prev) if p is not None]
            if have:
                sim = patch_similarity(torch.stack([current[i] for i in have]), torch.stack([prev[i] for i in have]),
                                       self.adapter.patch_size)
                dyn[have] = ~static_mask(sim, cfg.similarity_threshold, cap)
            # no past frame (first query of an episode): which patches changed is unknown; as many
            # patches as the static cap leaves are kept, chosen by layer-0 attention instead
            self._unknown = {i: n - min(cap, n) for i, p in enumerate(prev) if p is None}
        for vi, (view, sl) in enumerate(views):
            self.dynamic[vi] = (sl.start + torch.nonzero(dyn[vi]).flatten()).to(dev)
        self.k = {vi: per_view(cfg.topk_fine if fine else cfg.topk_coarse, vi, n) for vi in self.dynamic}
        self.kg = {vi: per_view(cfg.global_topk, vi, n) for vi in self.dynamic}
        if self.importance is None or self.importance.numel() != prep.layout.length:
            self.importance = torch.zeros(prep.layout.length, device=dev)
        self.layer0_lists: dict[int, torch.Tensor] = {}
        self.next_global: dict[int, torch.Tensor] = {}
        self._visual_kept = None
        ins = prep.layout.instruction
        self._instr_range = (ins.start + min(cfg.instruction_skip, max(ins.stop - ins.start - 1, 0)), ins.stop)
        self._length = prep.layout.length
        return None

    def _is_instruction(self, origins: torch.Tensor) -> torch.Tensor:
        a, b = self._instr_range
        return (origins >= a) & (origins < b)

    def _table(self, state: TokenState) -> torch.Tensor:
        return torch.zeros(self._length, dtype=torch.bool, device=state.origin.device)

    def prunes_after(self, layer_idx: int) -> bool:
        return (layer_idx == 0 or (layer_idx == 1 and self.cfg.rescore_layer1)
                or (self._dynamic_layers_on() and (layer_idx + 1) in self.drop_layers))

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
            self._instr_sel = torch.nonzero(self._is_instruction(state.origin[rows])).flatten()
        else:
            rows = torch.nonzero(self._is_instruction(state.origin)).flatten()
            self._instr_sel = None
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
            table = self._table(state)
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)
                self.layer0_lists[vi] = origins
                top = cfg.layer0_multiplier * self.k[vi]
                if vi in self._unknown:  # the best-scored patches stand in for the changed ones
                    self.dynamic[vi] = origins[: top + self._unknown[vi]]
                table[origins[:top]] = True
                table[self.dynamic[vi]] = True
                table[self.global_origins.get(vi, self._empty)] = True
            if not cfg.rescore_layer1:
                table = self._apply_budget(state, table, instr_scores)
                self._visual_kept = int(table.sum())
            keep = state.keep_rows_for(table)
        elif layer_idx == 1 and cfg.rescore_layer1:
            table = self._table(state)
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)  # origins, not row numbers
                table[origins[: self.k[vi]]] = True
                table[self.layer0_lists[vi][: self.k[vi]]] = True
                table[self.dynamic[vi]] = True
                table[self.global_origins.get(vi, self._empty)] = True
            table = self._apply_budget(state, table, instr_scores)
            self._visual_kept = int(table.sum())
            keep = state.keep_rows_for(table)
        if layer_idx == self.num_layers - 1 and cfg.use_global and instr_scores is not None:
            for vi in self.dynamic:
                origins, _ = self._view_scores(state, instr_scores, vi)
                self.next_global[vi] = origins[: self.kg[vi]]
        if self._dynamic_layers_on() and (layer_idx + 1) in self.drop_layers and keep is None:
            keep = self._drop_by_importance(state)
        return keep

    def _apply_budget(self, state: TokenState, table: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Cap the kept visual tokens (bool table over original tokens) at ``token_budget``, best scores first."""
        budget = self.cfg.token_budget
        if budget is None or int(table.sum()) <= budget:
            return table
        rows = torch.nonzero(table[state.origin] & (state.row_kinds >= 0)).flatten()
        best = rows[torch.argsort(scores[rows], descending=True)[:budget]]
        capped = self._table(state)
        capped[state.origin[best]] = True
        return capped

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
