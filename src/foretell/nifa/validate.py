"""Checks of what the public NIFA functions are given: a one-line ``ForetellError`` that says what was
wrong and what is accepted, before any work, instead of a raw torch / numpy / scipy error from deep
inside (or, for a node id past the end of the graph, a crashed process) or a silently wrong result.

:func:`check_graph` is the one check of a PyG graph, called by every entry point (``NIFA.attack``,
``NIFA.uncertainty``, ``train_victim`` and the fair victims, the baselines, ``add_split``,
``labelled_subgraph``, ``apply_defense``) with what that function needs. It costs a few
O(nodes + edges) reductions (and one pass over the stored feature values for NaN / inf) per call;
it reads the data and changes nothing, so results are the same with or without it.

What a graph must hold (docs/nifa.md; the loaders build exactly this):

* ``data``: a ``torch_geometric.data.Data``;
* ``x``: float32 features, dense or sparse CSR, one row per node, finite;
* ``edge_index``: a ``torch.long`` tensor of shape [2, E] with every id in 0 .. num_nodes - 1;
* ``y``: ``torch.long`` labels, -1 = unknown, else 0 .. C-1 with every class present and C >= 2
  (binary methods: C = 2);
* ``sens``: ``torch.long`` sensitive values 0 / 1, -1 = unknown;
* ``train_mask`` / ``val_mask`` / ``test_mask``: ``torch.bool``, one entry per node; a mask a method
  trains or evaluates on must select at least one node, and only nodes with a known label.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from foretell.core.argtypes import MAX_SEED
from foretell.core.checks import in_interval, is_int, is_real
from foretell.core.errors import ForetellError

GRAPH = ("x", "y", "sens", "edge_index")
MASKS = ("train_mask", "val_mask", "test_mask")
_ADD_SPLIT = "call foretell.nifa.add_split(data, seed) first"


# --- plain values ----------------------------------------------------------------------------------

def int_problem(value, low: int, high: int | None = None) -> str | None:
    """Why ``value`` is not an integer in [low, high] (None: it is)."""
    span = f"integers >= {low}" if high is None else f"integers in [{low}, {high}]"
    if not is_int(value):
        return f"{value!r} is not an integer (accepted: {span})"
    if value < low or (high is not None and value > high):
        return f"{value!r} is outside the accepted range ({span})"
    return None


def number_problem(value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
                   high_open: bool = False) -> str | None:
    """Why ``value`` is not a finite number in the interval (None: it is)."""
    if math.isinf(low) and math.isinf(high):
        span = "finite numbers"
    elif math.isinf(high):
        span = f"finite numbers {'>' if low_open else '>='} {low:g}"
    else:
        span = f"finite numbers in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not is_real(value):
        return f"{value!r} is not a number (accepted: {span})"
    if not in_interval(value, low, high, low_open=low_open, high_open=high_open):
        return f"{value!r} is outside the accepted range ({span})"
    return None


def check_int(who: str, name: str, value, low: int, high: int | None = None) -> int:
    problem = int_problem(value, low, high)
    if problem:
        raise ForetellError(f"{who}: {name}={problem}")
    return int(value)


def check_number(who: str, name: str, value, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    problem = number_problem(value, low, high, low_open=low_open, high_open=high_open)
    if problem:
        raise ForetellError(f"{who}: {name}={problem}")
    return float(value)


def check_seed(who: str, seed) -> int:
    """``seed`` as an int in 0 .. 2**32 - 1 (the range of numpy's and the CLI's seeds)."""
    return check_int(who, "seed", seed, 0, MAX_SEED)


def check_config(who: str, cfg, cls, default=None, *, name: str = "cfg"):
    """``cfg`` if it is a ``cls`` (validated when it has ``validate``), ``default`` (or ``cls()``) for
    None; anything else, e.g. a dict of settings, is an error naming the fields (and the argument,
    ``name``)."""
    if cfg is None:
        cfg = cls() if default is None else default
    if not isinstance(cfg, cls):
        import dataclasses

        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        hint = f"; build one with {cls.__name__}(**settings)" if isinstance(cfg, dict) else ""
        raise ForetellError(f"{who}: {name} is a {type(cfg).__name__}, expected a {cls.__name__} (or None for the "
                            f"defaults){hint}; its fields: {fields}")
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


# --- graphs ----------------------------------------------------------------------------------------

def _values(t: torch.Tensor) -> list:
    """Up to 6 distinct values of a (small-valued) integer tensor, for a message."""
    u = torch.unique(t).cpu().tolist()
    return u[:6] + (["..."] if len(u) > 6 else [])


def _tensor(who: str, data, key: str) -> torch.Tensor:
    value = data[key]
    if not isinstance(value, torch.Tensor):
        raise ForetellError(f"{who}: data.{key} is a {type(value).__name__}, expected a torch tensor "
                            f"(e.g. torch.as_tensor(...))")
    return value


def _node_vector(who: str, data, key: str, n: int, dtype: torch.dtype, what: str) -> torch.Tensor:
    t = _tensor(who, data, key)
    if t.dtype != dtype:
        raise ForetellError(f"{who}: data.{key} has dtype {t.dtype}, expected {dtype} ({what}; convert with "
                            f"data.{key} = data.{key}.{'bool' if dtype == torch.bool else 'long'}())")
    if t.dim() != 1 or t.shape[0] != n:
        raise ForetellError(f"{who}: data.{key} has shape {list(t.shape)}, expected [{n}] (one entry per node)")
    return t


def _num_nodes(who: str, data, fields) -> int:
    """The number of nodes: the rows of ``x`` (which must agree with an explicit ``num_nodes``), else
    the explicit ``num_nodes``, else the length of ``y``."""
    explicit = data.num_nodes if "num_nodes" in data else None
    if isinstance(explicit, torch.Tensor) and explicit.numel() == 1 and not explicit.is_floating_point():
        explicit = int(explicit)
    if explicit is not None and not (is_int(explicit) and explicit >= 0):
        raise ForetellError(f"{who}: data.num_nodes is {explicit!r}, expected a non-negative integer")
    if "x" in fields:
        x = _tensor(who, data, "x")
        if x.layout not in (torch.strided, torch.sparse_csr):
            raise ForetellError(f"{who}: data.x has layout {x.layout}, expected a dense or sparse CSR tensor "
                                f"(e.g. x.to_dense() or x.to_sparse_csr())")
        if x.dim() != 2:
            raise ForetellError(f"{who}: data.x has shape {list(x.shape)}, expected [num_nodes, num_features]")
        if x.dtype != torch.float32:
            extra = (" (integer features: convert, and set data.integer_features = True to keep the injected "
                     "features integer)" if not x.is_floating_point() else "")
            raise ForetellError(f"{who}: data.x has dtype {x.dtype}, expected torch.float32; convert with "
                                f"data.x = data.x.float(){extra}")
        if explicit is not None and x.shape[0] != explicit:
            raise ForetellError(f"{who}: data.x has {x.shape[0]} rows but data.num_nodes is {explicit}; "
                                f"expected one feature row per node")
        return int(x.shape[0])
    if explicit is not None:
        return int(explicit)
    y = _tensor(who, data, "y")
    return int(y.shape[0]) if y.dim() >= 1 else 0


def check_graph(data, who: str, *, fields=GRAPH, masks=(), other_masks: bool = True, classes: bool = True,
                binary: bool = False, groups_in: dict | None = None) -> int:
    """Check ``data`` for ``who`` (the function's name, which starts the message); returns num_nodes.

    ``fields``: the attributes ``who`` reads (checked as in the module docstring); ``masks``: the masks
    it trains or evaluates on (must exist, select >= 1 node, and only labelled ones); ``other_masks``:
    also check the type and length of any other mask present; ``classes``: labels must be 0 .. C-1
    with every class present and C >= 2 (``binary``: C = 2); ``groups_in``: {mask: why} masks whose
    labelled nodes must hold both sensitive groups."""
    from torch_geometric.data import Data

    if not isinstance(data, Data):
        hint = " (for a dict of tensors: torch_geometric.data.Data(**d))" if isinstance(data, dict) else ""
        raise ForetellError(f"{who}: data is {'None' if data is None else 'a ' + type(data).__name__}, expected a "
                            f"torch_geometric.data.Data graph with {', '.join(fields)}{hint}")
    missing = [k for k in (*fields, *masks) if k not in data]
    if missing:
        need = ", ".join((*fields, *masks))
        extra = f"; {_ADD_SPLIT}" if any(k in MASKS for k in missing) else ""
        raise ForetellError(f"{who}: data has no {', '.join(repr(k) for k in missing)}; it needs {need}{extra}")
    n = _num_nodes(who, data, fields)
    if "edge_index" in fields:
        ei = _tensor(who, data, "edge_index")
        if ei.dtype != torch.long:
            raise ForetellError(f"{who}: data.edge_index has dtype {ei.dtype}, expected torch.long "
                                f"(convert with data.edge_index = data.edge_index.long())")
        if ei.dim() != 2 or ei.shape[0] != 2:
            hint = " (transpose it: edge_index.t().contiguous())" if ei.dim() == 2 and ei.shape[1] == 2 else ""
            raise ForetellError(f"{who}: data.edge_index has shape {list(ei.shape)}, expected [2, num_edges]{hint}")
        if ei.numel():
            lo, hi = (int(v) for v in torch.stack([ei.min(), ei.max()]).tolist())
            if lo < 0 or hi >= n:
                raise ForetellError(f"{who}: data.edge_index holds node id {lo if lo < 0 else hi}, but the graph "
                                    f"has {n} nodes; accepted: ids 0 .. {n - 1}")
    y = None
    if "y" in fields:
        y = _node_vector(who, data, "y", n, torch.long, "class labels, -1 = unknown")
        if y.numel() and int(y.min()) < -1:
            raise ForetellError(f"{who}: data.y holds {int(y.min())}; accepted labels: 0 .. C-1, and -1 for unknown")
        if classes:
            known = torch.unique(y[y >= 0])
            c = int(known.numel())
            if c and int(known[-1]) != c - 1:
                raise ForetellError(f"{who}: data.y holds the classes {_values(known)}; accepted: 0 .. C-1 with "
                                    f"every class present (-1 = unknown); relabel them")
            if c < 2:
                raise ForetellError(f"{who}: data.y has {c} known class{'es' if c != 1 else ''}; accepted: at "
                                    f"least 2 classes 0 .. C-1 (-1 = unknown)")
            if binary and c != 2:
                raise ForetellError(f"{who} needs binary labels (0 and 1, -1 = unknown); data.y has {c} classes")
    sens = None
    if "sens" in fields:
        sens = _node_vector(who, data, "sens", n, torch.long, "sensitive groups 0 / 1, -1 = unknown")
        if ((sens < -1) | (sens > 1)).any():
            raise ForetellError(f"{who}: data.sens holds the values {_values(sens)}; accepted: 0 and 1 (the two "
                                f"sensitive groups) and -1 (unknown)")
    for key in MASKS:
        if key in masks or (other_masks and key in data):
            _node_vector(who, data, key, n, torch.bool, "a boolean node mask")
    for key in masks:
        mask = data[key]
        if not bool(mask.any()):
            raise ForetellError(f"{who}: data.{key} selects no node; it needs at least one ({_ADD_SPLIT} "
                                f"or set the mask)")
        if y is not None and bool((mask & (y < 0)).any()):
            count = int((mask & (y < 0)).sum())
            raise ForetellError(f"{who}: data.{key} selects {count} node(s) with unknown label (y = -1); "
                                f"accepted: masks over labelled nodes (add_split builds them)")
    for key, why in (groups_in or {}).items():
        s = sens[data[key] & (y >= 0)]
        absent = [g for g in (0, 1) if not bool((s == g).any())]
        if absent:
            raise ForetellError(f"{who}: the labelled nodes of data.{key} hold no node of sensitive group "
                                f"{absent[0]}; both groups (0 and 1) are needed there ({why})")
    if "x" in fields:
        x = data.x
        vals = x.values() if x.layout == torch.sparse_csr else x
        if vals.numel() and not bool(torch.isfinite(vals).all()):
            raise ForetellError(f"{who}: data.x holds {int((~torch.isfinite(vals)).sum())} NaN or infinite "
                                f"value(s); accepted: finite features")
    return n


def check_node_ids(who: str, name: str, nodes, n: int) -> np.ndarray:
    """``nodes`` (1-D integer node ids, a tensor, array or list) as a numpy int64 array, each in 0 .. n-1."""
    if isinstance(nodes, torch.Tensor):
        nodes = nodes.cpu().numpy()
    try:
        arr = np.asarray(nodes)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise ForetellError(f"{who}: {name} must be a 1-D list / array / tensor of integer node ids, got "
                            f"{type(nodes).__name__}{'' if arr is None else f' of shape {list(arr.shape)} ({arr.dtype})'}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ForetellError(f"{who}: {name} holds node id {bad}, but the graph has {n} nodes; accepted: ids "
                            f"0 .. {n - 1}")
    return arr
