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
from foretell.specprune.view_grid import ViewGrid


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
        self.global_mask: torch.Tensor | None = None  # bool [views, patches]: global set for the next query
        self.importance: torch.Tensor | None = None
        self._info = {}

    @property
    def mode(self) -> str:
        return self.controller.mode if self.cfg.use_controller else COARSE

    def observe(self, images, executed_action, queue_empty: bool) -> bool:
        a = torch.as_tensor(executed_action, dtype=torch.float32).flatten().cpu()  # one read; the rest is host math
        if a.numel() >= 3:
            self.speed_xyz = [s + float(d) for s, d in zip(self.speed_xyz, a[:3].tolist())]
        entered = self.controller.update(a, queue_empty=queue_empty)
        return bool(entered and self.cfg.requery_on_fine)

    @property
    def global_origins(self) -> dict:
        """The global set carried to the next query: view index -> original token indices."""
        if self.global_mask is None:
            return {}
        return {vi: self.grid.origins(self.global_mask, vi) for vi in range(self.grid.views)}

    # ------------------------------------------------------------------ static pruning
    def _setup(self, layout, device) -> None:
        """Per-layout constants: the view grid and the original indices of the scoring query rows."""
        key = (layout.length, tuple((s.start, s.stop) for s in layout.views.values()), layout.instruction, device)
        if getattr(self, "_layout_key", None) == key:
            return
        self._layout_key = key
        self.grid = ViewGrid(layout, device)
        ins = layout.instruction
        start = ins.start + min(self.cfg.instruction_skip, max(ins.stop - ins.start - 1, 0))
        self._instr_orig = torch.arange(start, ins.stop, device=device)
        self._nonvis_orig = torch.nonzero(self.grid.non_visual).flatten()
        # positions of the instruction rows among the non-visual rows (non-visual tokens are never dropped)
        self._instr_in_nonvis = torch.searchsorted(self._nonvis_orig, self._instr_orig)
        self.global_mask = None

    def begin(self, state: TokenState, prep, history):
        cfg, n = self.cfg, self.adapter.patches_per_view
        dev = state.origin.device
        self._setup(prep.layout, dev)
        fine = self.mode == FINE
        self._fine = fine
        gap = frame_gap(sum(d * d for d in self.speed_xyz) ** 0.5, cfg)
        self.speed_xyz = [0.0, 0.0, 0.0]
        cap = int(round((cfg.static_cap_fine if fine else cfg.static_cap_coarse) * n))
        views = list(prep.layout.views)
        dyn = torch.zeros(len(views), n, dtype=torch.bool, device=dev)
        unknown = [0] * len(views)  # per view: patches to keep by layer-0 attention (no past frame)
        if cfg.use_frame_diff:
            current = [prep.images[v][0].detach().float().to(dev) for v in views]
            prev = [history.frame_back(v, c, gap) if history is not None else None for v, c in zip(views, current)]
            have = [i for i, p in enumerate(prev) if p is not None]
            if have:
                sim = patch_similarity(torch.stack([current[i] for i in have]), torch.stack([prev[i] for i in have]),
                                       self.adapter.patch_size)
                changed = ~static_mask(sim, cfg.similarity_threshold, cap)
                if len(have) == len(views):  # every view has a past frame (all but an episode's first query)
                    dyn = changed
                else:
                    for j, i in enumerate(have):  # integer rows: a list index would be copied to the GPU
                        dyn[i] = changed[j]
            # no past frame (first query of an episode): which patches changed is unknown; as many
            # patches as the static cap leaves are kept, chosen by layer-0 attention instead
            unknown = [n - min(cap, n) if p is None else 0 for p in prev]
        self.dynamic = dyn
        self._unknown_views = [i for i, u in enumerate(unknown) if u > 0]
        self.k = tuple(per_view(cfg.topk_fine if fine else cfg.topk_coarse, vi, n) for vi in range(len(views)))
        self.kg = tuple(per_view(cfg.global_topk, vi, n) for vi in range(len(views)))
        self.top0 = tuple(cfg.layer0_multiplier * k for k in self.k)
        self.top0_unknown = tuple(t + u for t, u in zip(self.top0, unknown))
        if self.importance is None or self.importance.numel() != prep.layout.length:
            self.importance = torch.zeros(prep.layout.length, device=dev)
        self.next_global = None
        self._visual_kept = None
        return None

    def prunes_after(self, layer_idx: int) -> bool:
        return (layer_idx == 0 or (layer_idx == 1 and self.cfg.rescore_layer1)
                or (self._dynamic_layers_on() and (layer_idx + 1) in self.drop_layers))

    def _dynamic_layers_on(self) -> bool:
        return self.cfg.use_dynamic_layers and not self._fine

    def scores_at(self, layer_idx: int) -> bool:
        return (layer_idx == 0 or (layer_idx == 1 and self.cfg.rescore_layer1)
                or (layer_idx == self.num_layers - 1 and self.cfg.use_global)
                or (self._dynamic_layers_on() and layer_idx in self.importance_layers))

    def query_rows(self, layer_idx, state):
        if not self.scores_at(layer_idx):
            return None
        importance = self._dynamic_layers_on() and layer_idx in self.importance_layers
        if importance:  # all non-visual rows (the instruction rows are among them)
            self._instr_sel = self._instr_in_nonvis
            return state.rows_of(self._nonvis_orig)
        self._instr_sel = None
        return state.rows_of(self._instr_orig)

    def after_layer(self, layer_idx, state, probs, rows):
        cfg, grid = self.cfg, self.grid
        keep = None
        if probs is None:
            instr = None
        else:
            instr = grid.scores(state.origin, received_attention(probs, self._instr_sel))
            if self._dynamic_layers_on() and layer_idx in self.importance_layers:
                self._update_importance(state, received_attention(probs))
        if layer_idx == 0:
            # layer-0 top (multiplier * k) per view, the first k of that list, and for views without a
            # past frame the best-scored patches that stand in for the changed ones
            counts = (self.top0, self.k) if cfg.rescore_layer1 else (self.top0,)
            masks = grid.top(instr, *counts, *((self.top0_unknown,) if self._unknown_views else ()))
            top = masks[0]
            self.first_k0 = masks[1] if cfg.rescore_layer1 else None
            for vi in self._unknown_views:
                self.dynamic[vi] = masks[-1][vi]
            kept = top | self.dynamic
            if self.global_mask is not None:
                kept |= self.global_mask
            count = None
            if not cfg.rescore_layer1:
                kept = self._apply_budget(kept, instr, state.visual_count())
                count = self._visual_kept
            self.kept = kept
            keep = grid.keep_rows(state.origin, kept, count)
        elif layer_idx == 1 and cfg.rescore_layer1:
            (top,) = grid.top(instr, self.k)  # scores mapped through the ORIGINAL patch index
            kept = (top & self.kept) | self.first_k0 | self.dynamic
            if self.global_mask is not None:
                kept |= self.global_mask
            kept = self._apply_budget(kept, instr, state.visual_count())
            self.kept = kept
            keep = grid.keep_rows(state.origin, kept, self._visual_kept)
        if layer_idx == self.num_layers - 1 and cfg.use_global and instr is not None:
            (top,) = grid.top(instr, self.kg)
            self.next_global = top & torch.isfinite(instr)
        if self._dynamic_layers_on() and (layer_idx + 1) in self.drop_layers and keep is None:
            keep = self._drop_by_importance(state)
        return keep

    def _apply_budget(self, kept: torch.Tensor, scores: torch.Tensor, available: int) -> torch.Tensor:
        """Cap the kept visual tokens (bool [V, P]) at ``token_budget``, best scores first, then round
        the count up to a multiple of ``kept_multiple`` with the best scored patches not yet kept
        (at most the ``available`` visual rows); sets ``_visual_kept`` (the number kept after the
        static stage)."""
        budget = self.cfg.token_budget
        count = int(kept.sum())
        if budget is not None and count > budget:
            kept, count = self.grid.cap(kept, scores, budget), budget
        m = self.cfg.kept_multiple or 1
        if m > 1 and count % m:
            target = min(-(-count // m) * m, available, budget if budget is not None else available)
            if target > count:  # patches already dropped score -inf, so the present ones come first
                kept, count = kept | self.grid.cap(~kept, scores, target - count), target
        self._visual_kept = count
        return kept

    def _update_importance(self, state: TokenState, received: torch.Tensor) -> None:
        if state.visual_count() == 0:
            return
        vis = state.visual_index()
        w = rank_weights(received[vis])
        a = self.cfg.importance_alpha
        idx = state.origin[vis]
        self.importance[idx] = (1 - a) * self.importance[idx] + a * w

    def _drop_by_importance(self, state: TokenState):
        n_vis = state.visual_count()
        floor = int(round(self.cfg.drop_floor * state.visual_total()))
        target = max(int(round(self.cfg.drop_keep_fraction * n_vis)), min(floor, n_vis))
        if target >= n_vis:
            return None
        vis = state.visual_index()
        imp = self.importance[state.origin[vis]]
        return state.keep_visual_rows(state.visual_pick(vis, torch.argsort(imp, descending=True)[:target]))

    def end(self, state):
        if self.cfg.use_global:
            self.global_mask = self.next_global
        self._info = {"mode": FINE if self._fine else COARSE,
                      "visual_kept": self._visual_kept if self._visual_kept is not None else state.visual_count()}

    def query_info(self) -> dict:
        return dict(self._info)
