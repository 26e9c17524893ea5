"""Peer token-reduction methods at a fixed visual-token budget, on the same engine.

* ``FastVPolicy``: full computation up to layer K, then keep the ``budget`` visual tokens that
  receive the most head-averaged attention from the instruction tokens at layer K (FastV).
* ``VLACachePolicy`` (VLA-Cache-style): patches that changed least since the previous query and
  were not task-relevant (previous query's top instruction attention at the middle layer) are not
  recomputed; their cached keys/values from the previous query are reused as extra keys/values in
  every layer. Approximation: on a CPU, reuse saves compute only when the reused tokens skip the
  layers, so reused tokens are dropped before layer 0 and exactly ``total - budget`` of them are
  reused (most similar first; the similarity threshold is relaxed to hit the budget). The
  per-layer reuse fraction from attention entropy is not modelled. The first query of an episode
  computes everything.
* ``RandomPolicy``: after layer 0 keep ``budget`` visual tokens chosen uniformly at random (seeded).
"""

from __future__ import annotations

import torch

from foretell.specprune.engine import PruningPolicy, TokenState, cached_arange, rows_where
from foretell.specprune.frame_diff import patch_similarity
from foretell.specprune.importance import received_attention


def _instruction_rows(state: TokenState, skip: int = 0) -> torch.Tensor:
    ins = state.layout.instruction
    start = ins.start + min(skip, max(ins.stop - ins.start - 1, 0))
    # instruction tokens are never dropped: their rows are found without reading the device
    return state.rows_of(cached_arange(start, ins.stop, state.origin.device))


def _top_visual(state: TokenState, scores: torch.Tensor, budget: int) -> torch.Tensor:
    vis = state.visual_index()
    return state.keep_visual_rows(state.visual_pick(vis, torch.argsort(scores[vis], descending=True)[:budget]))


class FastVPolicy(PruningPolicy):
    """FastV: prune after layer ``layer`` by the attention the instruction pays each visual token."""

    name = "fastv"

    def __init__(self, budget: int, layer: int = 2):
        self.budget, self.layer = int(budget), int(layer)

    def scores_at(self, layer_idx):
        return layer_idx == self.layer

    def query_rows(self, layer_idx, state):
        return _instruction_rows(state) if layer_idx == self.layer else None

    def prunes_after(self, layer_idx):
        return layer_idx == self.layer

    def after_layer(self, layer_idx, state, probs, rows):
        if layer_idx != self.layer:
            return None
        return _top_visual(state, received_attention(probs), self.budget)

    def query_info(self):
        return {"visual_kept": self.budget}


class RandomPolicy(PruningPolicy):
    """Random pruning after layer 0 at a fixed budget (``seed`` fixes the sequence of draws)."""

    name = "random"

    def __init__(self, budget: int, seed: int = 0):
        self.budget = int(budget)
        self.generator = torch.Generator().manual_seed(int(seed))

    def prunes_after(self, layer_idx):
        return layer_idx == 0

    def after_layer(self, layer_idx, state, probs, rows):
        if layer_idx != 0:
            return None
        vis = state.visual_rows()
        pick = vis[torch.randperm(vis.numel(), generator=self.generator)[: self.budget].to(vis.device)]
        return state.keep_rows_for(state.origin[pick])

    def query_info(self):
        return {"visual_kept": self.budget}


class StaleKVInjector:
    """Cache-like object for transformers attention: stores fresh K/V per original token and
    prepends the previous query's K/V of the reused tokens to every layer's keys/values."""

    def __init__(self, store: dict, origin: torch.Tensor, reused: torch.Tensor, length: int):
        self.store, self.origin, self.reused, self.length = store, origin, reused, length

    def extra_keys(self, layer_idx: int) -> int:
        return int(self.reused.numel()) if layer_idx in self.store else 0

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        old = self.store.get(layer_idx)
        if old is None:  # first query: allocate the per-token store
            shape = (key_states.shape[0], key_states.shape[1], self.length, key_states.shape[3])
            old = (key_states.new_zeros(shape), value_states.new_zeros(shape))
            fresh_only = True
        else:
            fresh_only = False
        k_all, v_all = old
        if fresh_only or self.reused.numel() == 0:
            keys, values = key_states, value_states
        else:
            keys = torch.cat([k_all[:, :, self.reused], key_states], dim=2)
            values = torch.cat([v_all[:, :, self.reused], value_states], dim=2)
        k_all, v_all = k_all.clone(), v_all.clone()
        k_all[:, :, self.origin] = key_states
        v_all[:, :, self.origin] = value_states
        self.store[layer_idx] = (k_all, v_all)
        return keys, values


class VLACachePolicy(PruningPolicy):
    """VLA-Cache-style reuse of static, task-irrelevant tokens' K/V from the previous query."""

    name = "vla_cache"

    def __init__(self, adapter, budget: int, num_layers: int, relevant_fraction: float = 100 / 256):
        self.adapter, self.budget, self.num_layers = adapter, int(budget), num_layers
        self.relevant_fraction = relevant_fraction
        self.reset_state()

    def reset_state(self):
        self.store: dict = {}
        self.last_frames: dict = {}
        self.relevant = torch.empty(0, dtype=torch.long)
        self.length = None
        self.reused = torch.empty(0, dtype=torch.long)

    def begin(self, state, prep, history):
        layout = prep.layout
        if self.length != layout.length:  # new episode layout: nothing cached
            self.store, self.last_frames, self.length = {}, {}, layout.length
        dev = state.origin.device
        frames = {v: prep.images[v][0].detach().float().to(dev) for v in layout.views}
        reused = torch.empty(0, dtype=torch.long, device=dev)
        total = sum(s.stop - s.start for s in layout.views.values())
        n_reuse = total - self.budget
        if self.store and self.last_frames and n_reuse > 0:
            sims = torch.cat([patch_similarity(frames[v], self.last_frames[v], self.adapter.patch_size) for v in layout.views])
            origins = torch.cat([torch.arange(s.start, s.stop, device=dev) for s in layout.views.values()])
            relevant = torch.isin(origins, self.relevant.to(dev))
            order = torch.argsort(sims + torch.where(relevant, -10.0, 0.0), descending=True)  # task-relevant ones last
            reused = torch.sort(origins[order[:n_reuse]]).values
        self.last_frames = frames
        self.reused = reused
        self._kept = total - int(reused.numel())
        if reused.numel() == 0:
            return None
        return rows_where(~torch.isin(state.origin, self.reused), state.origin.numel() - int(reused.numel()))

    def kv_cache(self, state):
        return StaleKVInjector(self.store, state.origin, self.reused, state.layout.length)

    def scores_at(self, layer_idx):
        return layer_idx == self.num_layers // 2

    def query_rows(self, layer_idx, state):
        return _instruction_rows(state) if layer_idx == self.num_layers // 2 else None

    def after_layer(self, layer_idx, state, probs, rows):
        if probs is not None:
            scores = received_attention(probs)
            vis = state.visual_rows()
            k = max(1, int(round(self.relevant_fraction * state.visual_total())))
            self.relevant = state.origin[vis[torch.argsort(scores[vis], descending=True)[:k]]]
        return None

    def query_info(self):
        return {"visual_kept": self._kept}
