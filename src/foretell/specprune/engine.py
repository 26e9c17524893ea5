"""The pruning engine: runs the decoder layers itself and gathers tokens between layers.

Rotary embeddings are computed once from the ORIGINAL position ids and gathered together with the
hidden states, so kept tokens keep their positions (with gaps). ``TokenState.origin`` maps every
current row to its original token index: scores computed on the current rows are always mapped
through it (the released code's layer-1 mapping defect cannot happen), and the action slots are
found again by their original indices. With a policy that never prunes, the computation is the
same sequence of operations as ``OFTStyleVLA.run_backbone`` (bit-identical results).

Layers that score or after which the policy prunes run split (``_run_layer_split``): keys/values
for every token, the scoring rows' attention formed from the same q/k projections, then queries,
output projection and MLP only for the rows that are kept. Every other layer is the transformers
decoder layer itself on SDPA (with a key/value cache policy, scoring layers capture the layer's q/k
projections by forward hooks instead).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import rotate_half

from foretell.specprune.adapter import PreparedInputs
from foretell.specprune.importance import attention_from_projections, attention_from_rotated, attention_macs
from foretell.specprune.model import TokenLayout


def layer_macs(n_tokens: int, n_keys: int, dims: dict) -> int:
    """Analytic MACs of one Llama decoder layer: projections, MLP and attention (norms ignored)."""
    h, q, kv, inter = dims["hidden"], dims["q_width"], dims["kv_width"], dims["intermediate"]
    return n_tokens * (h * q + 2 * h * kv + q * h + 3 * h * inter) + 2 * n_tokens * n_keys * q


_KINDS_CACHE: dict = {}


def token_kinds(layout: TokenLayout, device=None) -> torch.Tensor:
    """Long [S]: view index for visual tokens, -1 for every other token (cached per layout and device,
    so a GPU query does not copy it again; read-only)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (layout.length, tuple((s.start, s.stop) for s in layout.views.values()), str(device))
    kind = _KINDS_CACHE.get(key)
    if kind is None:
        kind = torch.full((layout.length,), -1, dtype=torch.long)
        for i, sl in enumerate(layout.views.values()):
            kind[sl] = i
        kind = kind.to(device)
        if len(_KINDS_CACHE) > 64:
            _KINDS_CACHE.clear()
        _KINDS_CACHE[key] = kind
    return kind


_ARANGE_CACHE: dict = {}


def cached_arange(start: int, stop: int, device) -> torch.Tensor:
    """``torch.arange(start, stop)`` on ``device``, built once (read-only)."""
    key = (start, stop, str(device))
    out = _ARANGE_CACHE.get(key)
    if out is None:
        if len(_ARANGE_CACHE) > 256:
            _ARANGE_CACHE.clear()
        with torch.inference_mode(False):  # a normal tensor: usable by autograd outside inference mode too
            out = _ARANGE_CACHE[key] = torch.arange(start, stop, device=device)
    return out


def rows_where(mask: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Indices of the True entries of a 1-d ``mask``, ascending (as ``torch.nonzero``). With ``count``
    (their number, known on the host) a stable sort finds them without reading the device."""
    if count is None:
        return torch.nonzero(mask).flatten()
    return torch.argsort(mask.logical_not().to(torch.uint8), stable=True)[:count]


@dataclass
class TokenState:
    """The tokens currently in the backbone: hidden states, positions, rope and original indices."""

    hidden: torch.Tensor  # [1, n, H]
    position_ids: torch.Tensor  # [1, n]
    cos: torch.Tensor
    sin: torch.Tensor
    origin: torch.Tensor  # [n] original token index of each row (sorted)
    layout: TokenLayout
    kinds: torch.Tensor  # [S] view index per ORIGINAL token, -1 non-visual
    captured: dict | None = None  # q/k projection outputs of the layer that just ran (scoring layers)
    positions_are_indices: bool = False  # position_ids == origin (PreparedInputs.positions_are_indices)

    _row_kinds: torch.Tensor | None = None
    _non_visual: int | None = None
    _rope: torch.Tensor | None = None  # [2, B, n, head_dim]: cos and sin after the first gather

    @property
    def row_kinds(self) -> torch.Tensor:
        """View index (or -1) of every current row (cached until the next gather)."""
        if self._row_kinds is None:
            self._row_kinds = self.kinds[self.origin]
        return self._row_kinds

    def rows_in(self, sl: slice) -> torch.Tensor:
        """Current rows whose original index lies in ``sl`` (reads the count from the device)."""
        return torch.nonzero((self.origin >= sl.start) & (self.origin < sl.stop)).flatten()

    def visual_rows(self) -> torch.Tensor:
        """Current rows of the visual tokens (ascending), without reading the device: the views are one
        block of original indices and non-visual tokens are never dropped, so the visual rows are the
        slice after the non-visual tokens that precede the views (a stable sort on other layouts)."""
        start, stop = self._visual_block()
        n = self.visual_count()
        if start is not None:
            return self._arange(start, start + n)
        return rows_where(self.row_kinds >= 0, n)

    def visual_index(self):
        """Index of the visual rows for ``tensor[...]``: a slice when the views are one block of
        original indices (a view, no kernel), else the rows (:meth:`visual_rows`)."""
        start, _ = self._visual_block()
        return self.visual_rows() if start is None else slice(start, start + self.visual_count())

    def visual_pick(self, index, order: torch.Tensor) -> torch.Tensor:
        """Current rows of the visual tokens at positions ``order`` of ``visual_index()``."""
        return order + index.start if isinstance(index, slice) else index[order]

    def keep_visual_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows to keep (ascending): every non-visual row plus the visual ``rows`` (distinct current rows,
        any order); the same as ``keep_rows_for(origin[rows])`` in fewer kernels on one visual block."""
        index = self.visual_index()
        if not isinstance(index, slice):
            return self.keep_rows_for(self.origin[rows])
        return torch.cat([self._arange(0, index.start), torch.sort(rows).values,
                          self._arange(index.stop, self.hidden.shape[1])])

    def _visual_block(self) -> tuple:
        spans = sorted((s.start, s.stop) for s in self.layout.views.values())
        if all(a[1] == b[0] for a, b in zip(spans, spans[1:])):
            return spans[0][0], spans[-1][1]
        return None, None

    def _arange(self, start: int, stop: int) -> torch.Tensor:
        return cached_arange(start, stop, self.origin.device)

    def rows_of(self, origins: torch.Tensor) -> torch.Tensor:
        """Current rows of the given original token indices (sorted; every one must still be present,
        e.g. non-visual tokens, which policies never drop)."""
        return torch.searchsorted(self.origin, origins)

    def visual_total(self) -> int:
        """Visual tokens of the unpruned sequence (from the layout: no device read)."""
        return sum(s.stop - s.start for s in self.layout.views.values())

    def visual_count(self) -> int:
        """Visual tokens among the current rows (non-visual tokens are never dropped, so no tensor op)."""
        if self._non_visual is None:
            self._non_visual = self.layout.length - self.visual_total()
        return self.hidden.shape[1] - self._non_visual

    def keep_rows_for(self, visual_origins: torch.Tensor) -> torch.Tensor:
        """Rows to keep (ascending): every non-visual row plus the visual rows whose original index is
        in ``visual_origins`` (distinct and present, so the count is known without a device read)."""
        table = torch.zeros(self.kinds.numel(), dtype=torch.bool, device=self.origin.device)
        table[visual_origins] = True
        n_keep = self.hidden.shape[1] - self.visual_count() + visual_origins.numel()
        return rows_where(table[self.origin] | (self.row_kinds < 0), n_keep)

    def gather(self, rows: torch.Tensor, hidden: torch.Tensor | None = None) -> None:
        """Keep only ``rows`` (ascending, as ``torch.nonzero`` returns them, so the original order is
        preserved); ``hidden``: the already gathered states."""
        self.hidden = self.hidden[:, rows] if hidden is None else hidden
        self.origin = self.origin[rows]
        # positions equal to the original indices are a view of ``origin``; cos and sin travel as one tensor
        self.position_ids = self.origin.unsqueeze(0) if self.positions_are_indices else self.position_ids[:, rows]
        rope = self._rope if self._rope is not None else torch.stack([self.cos, self.sin])
        self._rope = rope[:, :, rows]
        self.cos, self.sin = self._rope[0], self._rope[1]
        self._row_kinds = None


class PruningPolicy:
    """Decides which tokens to drop; the base class never prunes (the ``full`` method)."""

    name = "full"

    def reset_state(self) -> None:
        """Forget per-episode state."""

    def observe(self, images: dict, executed_action, queue_empty: bool) -> bool:
        """Called after every env step; return True to ask for an immediate re-query."""
        return False

    def begin(self, state: TokenState, prep: PreparedInputs, history) -> torch.Tensor | None:
        """Called before layer 0; may return rows to keep (pruning before the first layer)."""
        return None

    def query_rows(self, layer_idx: int, state: TokenState) -> torch.Tensor | None:
        """Rows whose attention over all tokens must be materialised at ``layer_idx`` (None: none)."""
        return None

    def after_layer(self, layer_idx: int, state: TokenState, probs, rows) -> torch.Tensor | None:
        """Called after each layer with that layer's attention of ``rows`` (if requested); rows to keep or None."""
        return None

    def prunes_after(self, layer_idx: int) -> bool:
        """True if ``after_layer(layer_idx, ...)`` may drop rows: the engine then runs that layer split
        (attention of all tokens, output projection and MLP only for the kept rows). With CUDA graphs
        a policy must say True wherever ``after_layer`` may return rows (see ``plain_layer``)."""
        return False

    def scores_at(self, layer_idx: int) -> bool:
        """True if ``query_rows(layer_idx, ...)`` may ask for attention rows (without its side effects)."""
        return False

    def plain_layer(self, layer_idx: int) -> bool:
        """True if the policy neither scores at nor prunes after ``layer_idx``, so ``query_rows`` and
        ``after_layer`` would do nothing there: the engine may run it inside a captured graph.

        A subclass that overrides ``query_rows`` without ``scores_at``, or ``after_layer`` without
        ``prunes_after``, has not declared where it acts: none of its layers is plain (run eagerly)."""
        cls = type(self)
        if ((cls.query_rows is not PruningPolicy.query_rows and cls.scores_at is PruningPolicy.scores_at)
                or (cls.after_layer is not PruningPolicy.after_layer and cls.prunes_after is PruningPolicy.prunes_after)):
            return False
        return not (self.scores_at(layer_idx) or self.prunes_after(layer_idx))

    def kv_cache(self, state: TokenState):
        """An object with ``update(k, v, layer_idx, **kw)`` injecting extra keys/values, or None."""
        return None

    def end(self, state: TokenState) -> None:
        """Called after the last layer."""

    def query_info(self) -> dict:
        """Per-query facts for the statistics (``mode``, ``visual_kept``)."""
        return {}


def score_rows(layer, state: TokenState, rows: torch.Tensor) -> torch.Tensor:
    """Attention [heads, len(rows), n] of ``rows`` over the current tokens at ``layer``, from what the
    layer computed (``state.captured``): the rotary-embedded q/k of a split layer (``q_rot``/``k_rot``),
    or the q/k projection outputs captured by hooks (``q``/``k``); scoring layers only."""
    cap = state.captured
    if "q_rot" in cap:
        return attention_from_rotated(cap["q_rot"], cap["k_rot"], rows, layer.self_attn.scaling)
    return attention_from_projections(layer, cap["q"], cap["k"], (state.cos, state.sin), rows)


_CACHE_KWARG: dict = {}


def _cache_kwarg(layer) -> str:
    """Name of the decoder layer's cache argument (``cache`` in transformers 5, ``past_key_value(s)`` before)."""
    cls = type(layer)
    if cls not in _CACHE_KWARG:
        params = inspect.signature(layer.forward).parameters
        _CACHE_KWARG[cls] = next((p for p in ("cache", "past_key_values", "past_key_value") if p in params), "cache")
    return _CACHE_KWARG[cls]


def _run_layer(layer, state: TokenState, cache, capture: bool) -> None:
    kwargs = {_cache_kwarg(layer): cache} if cache is not None else {}
    hooks = []
    if capture:
        state.captured = {}
        attn = layer.self_attn
        hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: state.captured.__setitem__("q", o)),
                 attn.k_proj.register_forward_hook(lambda m, i, o: state.captured.__setitem__("k", o))]
    try:
        state.hidden = layer(state.hidden, attention_mask=None, position_ids=state.position_ids,
                             position_embeddings=(state.cos, state.sin), **kwargs)
    finally:
        for h in hooks:
            h.remove()


_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def _run_layer_split(layer, state: TokenState, policy, layer_idx: int, rows):
    """Run a Llama decoder layer from its modules, scoring ``rows`` and dropping what the policy prunes.

    Keys and values come from every current token (exactly the attention the full layer computes);
    queries and keys get the rotary embedding once, for every row, and the scores of this very layer
    are read from them; the policy decides on those scores, and the attention output, the output
    projection and the MLP are computed only for the rows it keeps -- the kept rows' outputs equal
    the full layer's, without the work for rows that would be dropped anyway. Returns (probs, keep
    rows or None); ``keep`` must be ascending (as ``torch.nonzero`` returns it).
    """
    attn = layer.self_attn
    h = state.hidden
    n, hd = h.shape[1], attn.head_dim
    x = layer.input_layernorm(h)
    q = attn.q_proj(x).view(1, n, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(1, n, -1, hd).transpose(1, 2)
    v = attn.v_proj(x).view(1, n, -1, hd).transpose(1, 2)
    cos, sin = state.cos.unsqueeze(1), state.sin.unsqueeze(1)  # transformers' apply_rotary_pos_emb
    q = (q * cos) + (rotate_half(q) * sin)
    k = (k * cos) + (rotate_half(k) * sin)
    probs = None
    if rows is not None:
        state.captured = {"q_rot": q, "k_rot": k}
        probs = score_rows(layer, state, rows)
        state.captured = None
    keep = policy.after_layer(layer_idx, state, probs, rows)
    if keep is not None:
        h, q = h[:, keep], q[:, :, keep]
    m = h.shape[1]
    groups = attn.num_key_value_groups
    if groups > 1 and not _SDPA_HAS_GQA:  # torch < 2.5: share key/value heads explicitly
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        groups = 1
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling, enable_gqa=groups > 1) if _SDPA_HAS_GQA else \
        F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
    h = h + attn.o_proj(out.transpose(1, 2).reshape(1, m, -1))
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    if keep is not None:
        state.gather(keep, hidden=h)
    else:
        state.hidden = h
    return probs, keep


def split_layer_macs(n_tokens: int, n_kept: int, dims: dict) -> int:
    """MACs of :func:`_run_layer_split`: q/k/v for all rows, attention, o_proj and MLP for the kept rows."""
    h, q, kv, inter = dims["hidden"], dims["q_width"], dims["kv_width"], dims["intermediate"]
    return n_tokens * (h * q + 2 * h * kv) + n_kept * (q * h + 3 * h * inter) + 2 * n_kept * n_tokens * q


@dataclass
class QueryRecord:
    """Facts about one backbone pass (wall and calling-thread CPU seconds, MACs, visual tokens per layer)."""

    seconds: float
    cpu_seconds: float
    macs: int
    macs_full: int
    visual_per_layer: list
    visual_kept: int
    mode: str
    extra_keys: int = 0
    info: dict = field(default_factory=dict)


def plain_segments(policy: PruningPolicy, num_layers: int, min_layers: int = 2) -> dict:
    """{first layer: end layer} of every maximal run of at least ``min_layers`` plain layers."""
    out, i = {}, 0
    while i < num_layers:
        j = i
        while j < num_layers and policy.plain_layer(j):
            j += 1
        if j - i >= min_layers:
            out[i] = j
        i = max(j, i + 1)
    return out


def run_backbone(adapter, prep: PreparedInputs, policy: PruningPolicy, history=None,
                 graphs=None) -> tuple[torch.Tensor, QueryRecord]:
    """One backbone pass under ``policy``: returns (final hidden of the action slots [1, A, H], record).

    ``graphs``: a :class:`~foretell.specprune.graphs.LayerGraphs`; every run of two or more plain
    layers (``policy.plain_layer``) then goes through it. Not used with a key/value cache policy."""
    dims = adapter.dims()
    layers = adapter.layers
    cuda = prep.embeds.is_cuda
    if cuda:  # time the backbone alone, not queued kernels of earlier work
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.thread_time()
    hidden = prep.embeds
    cos, sin = adapter.rotary(hidden, prep.position_ids)
    state = TokenState(hidden=hidden, position_ids=prep.position_ids, cos=cos, sin=sin,
                       origin=torch.arange(hidden.shape[1], device=hidden.device), layout=prep.layout,
                       kinds=token_kinds(prep.layout, hidden.device),
                       positions_are_indices=getattr(prep, "positions_are_indices", False))
    keep = policy.begin(state, prep, history)
    if keep is not None:
        state.gather(keep)
    cache = policy.kv_cache(state)
    macs, per_layer, extra = 0, [], 0
    segments = plain_segments(policy, len(layers)) if graphs is not None and cache is None else {}
    skip_to = 0
    for i, layer in enumerate(layers):
        if i < skip_to:
            continue
        if i in segments:
            skip_to, n = segments[i], state.hidden.shape[1]
            per_layer.extend([state.visual_count()] * (skip_to - i))
            macs += (skip_to - i) * layer_macs(n, n, dims)
            state.hidden = graphs.run(layers, i, skip_to, state.hidden, state.position_ids, state.cos, state.sin)
            continue
        rows = policy.query_rows(i, state)
        n = state.hidden.shape[1]
        n_keys = n + (cache.extra_keys(i) if cache is not None else 0)
        extra = max(extra, n_keys - n)
        per_layer.append(state.visual_count())
        if rows is not None:
            macs += attention_macs(len(rows), n, dims["q_width"])
        if cache is None and (rows is not None or policy.prunes_after(i)):
            _run_layer_split(layer, state, policy, i, rows)
            macs += split_layer_macs(n, state.hidden.shape[1], dims)
            continue
        macs += layer_macs(n, n_keys, dims)
        _run_layer(layer, state, cache, capture=rows is not None)
        probs = None
        if rows is not None:
            probs = score_rows(layer, state, rows)
            state.captured = None
        keep = policy.after_layer(i, state, probs, rows)
        if keep is not None:
            state.gather(keep)
    policy.end(state)
    hidden = adapter.final_norm(state.hidden)
    if state.origin.numel() == prep.layout.length:  # nothing dropped: rows are the original indices
        out = hidden[:, prep.layout.actions]
    else:
        acts = state._arange(prep.layout.actions.start, prep.layout.actions.stop)
        action_rows = state.rows_of(acts).clamp_max(state.origin.numel() - 1)
        # checked on the device (raises at the next read there, at once on the CPU): no host wait
        torch._assert_async((state.origin[action_rows] == acts).all(),
                            "pruning dropped action slots; policies must keep non-visual tokens")
        out = hidden[:, action_rows]
    if cuda:
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.thread_time() - c0
    info = policy.query_info()
    full = sum(layer_macs(prep.layout.length, prep.layout.length, dims) for _ in layers)
    record = QueryRecord(seconds=seconds, cpu_seconds=cpu_seconds, macs=macs, macs_full=full, visual_per_layer=per_layer,
                         visual_kept=int(info.get("visual_kept", per_layer[-1])), mode=info.get("mode", "coarse"),
                         extra_keys=extra, info=info)
    return out, record
