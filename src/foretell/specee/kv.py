"""Layer-by-layer decoding with early exit and a correct KV cache for the skipped layers.

:class:`LayerStepper` owns the target's ``DynamicCache`` (``cache.layers[i].keys/values``) and runs
new tokens layer by layer. An exit rule may stop the pass after any layer; the layers above it are
then handled by the KV strategy:

* ``"fill"`` (CALM-style): the exit layer's hidden state stands in for the missing layers' inputs;
  their keys/values are projected from it at once (input norm, k/v projections, rotary).
* ``"lazy"``: the exited tokens' hidden states are kept as *pending*; the next pass prepends them
  at their resume layer, so the skipped layers are computed together with the next token (exact
  K/V, as if the token had run the whole stack; batched with the next token on the same weights).

Invariant (checked by the tests): for every layer i, ``cache_len(i) + pending tokens that still
need layer i == tokens processed``; after :meth:`flush` every layer holds exactly all tokens.
Pending groups are kept in position order and their resume layers never increase with position,
so the tokens a layer has not seen are always a contiguous suffix of the sequence.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess, causal_mask

KV_STRATEGIES = ("lazy", "fill")


def rotate_and_project_kv(acc: DecoderAccess, layer: int, h: torch.Tensor, cos_sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values that ``layer`` would cache if its input were ``h`` (1, n, d) (CALM fill)."""
    blk = acc.layers[layer]
    attn = blk.self_attn
    x = blk.input_layernorm(h)
    head_dim = attn.head_dim
    k = attn.k_proj(x).view(1, x.shape[1], -1, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(1, x.shape[1], -1, head_dim).transpose(1, 2)
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    _, k = rope(k, k, *cos_sin)
    return k, v


class LayerStepper:
    """Runs tokens through the target layer by layer with early exit; see the module docstring."""

    def __init__(self, acc: DecoderAccess, kv_strategy: str = "lazy"):
        if kv_strategy not in KV_STRATEGIES:
            raise ForetellError(f"kv_strategy must be one of {', '.join(KV_STRATEGIES)}, got {kv_strategy!r}")
        self.acc, self.kv_strategy = acc, kv_strategy
        self.reset_state()

    def reset_state(self) -> None:
        """Empty cache, no pending tokens."""
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.pending: list[list] = []          # [resume_layer, hidden (n, d)] in position order
        self.num_tokens = 0
        self.finished: tuple[int, torch.Tensor] | None = None

    def cache_len(self, layer: int) -> int:
        """Tokens whose K/V layer ``layer`` holds."""
        if layer >= len(self.cache.layers):
            return 0
        return self.cache.layers[layer].get_seq_length()

    def pending_count(self, layer: int) -> int:
        """Processed tokens that still owe layer ``layer`` its K/V."""
        return sum(h.shape[0] for r, h in self.pending if r <= layer)

    @torch.no_grad()
    def run(self, tokens: torch.Tensor | None, exit_fn: Callable | None = None, *,
            depths: list[int] | None = None, ancestors: torch.Tensor | None = None):
        """Process ``tokens`` (q,) (None: only pending work). ``exit_fn(layer, h_new (q, d))`` may
        return a truthy decision to stop after ``layer``. Returns (h_new (q, d) at the last layer
        run, that layer, decision or None). ``self.finished`` is then (first position, states (n, d))
        of the rows that ran the last layer in this pass (deferred rows included), or None.

        A draft tree (:mod:`foretell.specee.tree`): ``depths`` (q,) place the new rows at
        ``num_tokens + depth`` and ``ancestors`` (q, q) bool says which new rows each one sees
        (instead of all earlier ones); the cache and deferred rows stay visible to all."""
        acc = self.acc
        n_layers = acc.num_layers
        q = 0 if tokens is None else tokens.numel()
        n_before = self.num_tokens
        total = n_before + q
        start = self.cache_len(n_layers - 1)                     # the deepest layer lags the most
        dev = acc.device
        positions = torch.arange(start, total, device=dev)
        if depths is not None:
            positions[n_before - start:] = n_before + torch.tensor(depths, device=dev)
        masks: dict = {}
        if q:
            h = acc.embed(tokens.view(1, -1).to(dev))
        else:
            h = torch.zeros(1, 0, acc.hidden_size, dtype=acc.lm_head.weight.dtype, device=dev)
        cos, sin = acc.rotary_for(h, positions)
        decision, layer = None, n_layers - 1
        self.finished = None
        for layer in range(n_layers):
            joiners = [g for g in self.pending if g[0] == layer]
            if joiners:
                h = torch.cat([g[1].view(1, -1, g[1].shape[-1]) for g in joiners] + [h], dim=1)
                self.pending = [g for g in self.pending if g[0] != layer]
            c = self.cache_len(layer)
            if h.shape[1] == 0:
                continue
            if h.shape[1] != total - c:
                raise RuntimeError(f"KV bookkeeping broken at layer {layer}: {h.shape[1]} tokens for "
                                   f"cache length {c} of {total}")
            sl = slice(c - start, total - start)
            mask = None
            if ancestors is not None:
                if c not in masks:
                    masks[c] = tree_block_mask(ancestors, c, n_before - c, h.dtype, dev)
                mask = masks[c]
            h = acc.run_layer(layer, h, positions[sl], (cos[:, sl], sin[:, sl]), self.cache, c, mask=mask)
            if layer == n_layers - 1:
                self.finished = (c, h[0])
            if exit_fn is not None and q and layer < n_layers - 1:
                decision = exit_fn(layer, h[0, -q:])
                if decision:
                    self._skip_above(layer, h, positions[sl], (cos[:, sl], sin[:, sl]))
                    break
        self.num_tokens = total
        return (h[0, -q:] if q else h[0]), layer, decision

    def _skip_above(self, layer: int, h: torch.Tensor, positions, cos_sin) -> None:
        """Exit after ``layer``: keep the batch pending (lazy) or fill the skipped layers' K/V."""
        if self.kv_strategy == "lazy":
            self.pending.append([layer + 1, h[0]])
            return
        for m in range(layer + 1, self.acc.num_layers):
            k, v = rotate_and_project_kv(self.acc, m, h, cos_sin)
            self.cache.update(k, v, m)

    def flush(self) -> None:
        """Compute all pending K/V now (end of generation, or before inspecting the cache)."""
        if self.pending:
            self.run(None)

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` processed tokens (rejected speculative tokens)."""
        if n <= 0:
            return
        keep = self.num_tokens - n
        for lay in self.cache.layers:
            if getattr(lay, "keys", None) is not None and lay.keys.numel() and lay.keys.shape[-2] > keep:
                lay.keys = lay.keys[..., :keep, :]
                lay.values = lay.values[..., :keep, :]
        end = self.num_tokens
        groups = []
        for r, h in reversed(self.pending):       # newest group first
            begin = end - h.shape[0]
            if begin < keep:
                groups.append([r, h[: keep - begin]])
            end = begin
        self.pending = [g for g in reversed(groups) if g[1].shape[0]]
        self.num_tokens = keep


def tree_block_mask(ancestors: torch.Tensor, past_len: int, n_pending: int, dtype, device) -> torch.Tensor:
    """Additive mask for ``n_pending`` deferred rows (causal) followed by a draft tree's rows (each
    sees the cache, the deferred rows and its own ancestors), after ``past_len`` cached tokens."""
    mask = causal_mask(n_pending + ancestors.shape[0], past_len, dtype, device)
    mask[0, 0, n_pending:, past_len + n_pending:].masked_fill_(~ancestors.to(device), torch.finfo(dtype).min)
    return mask
