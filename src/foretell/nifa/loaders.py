"""Loading fairness graphs (FairGNN, PyGDebias and FA-GNN/DBLP formats) into PyG ``Data``.

Every loader returns ``torch_geometric.data.Data`` with

* ``x``: node features, a sparse CSR tensor for DBLP's term counts, dense otherwise;
* ``y``: labels (``-1`` = unknown), ``sens``: sensitive attribute in {0, 1} (``-1`` = unknown);
* ``edge_index``: undirected (both directions), no self loops, no duplicates;
* ``name`` and ``integer_features`` (True when every real feature value is an integer).

Train/val/test masks are added by :func:`foretell.nifa.splits.add_split`. Every problem with a file
(missing file or column, malformed line, non-binary sensitive attribute, unknown node id) raises a
:class:`~foretell.core.errors.ForetellError` that names the file and, where there is one, the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foretell.core.errors import ForetellError

FORMATS = ("fairgnn", "pygdebias", "dblp")


@dataclass(frozen=True)
class DatasetSpec:
    """How one named data set is read: file format, columns, value maps and dropped columns."""

    format: str
    name: str
    label_column: str
    sensitive_column: str
    label_map: dict | None = None        # raw label -> class; values not in the map: see binarize
    binarize_labels: bool = False        # FairGNN's Pokec rule: label > 1 -> 1
    sensitive_map: dict | None = None    # raw value -> {0, 1, -1}
    drop_columns: tuple = field(default_factory=tuple)
    subdir: str = ""                     # folder under the shared directory
    normalize: bool = False              # PyGDebias feature_norm: 2 (x - min) / (max - min) - 1


PRESETS = {
    "dblp": DatasetSpec("dblp", "dblp", "label", "gender", subdir="data/graphs/dblp",
                        label_map={0: -1, 1: 1, 2: 0, 3: 0, 4: 0},
                        sensitive_map={"f": 1, "m": 0, "none": -1}),
    "german": DatasetSpec("pygdebias", "german", "GoodCustomer", "Gender", subdir="data/graphs/german",
                          label_map={-1: 0, 1: 1}, sensitive_map={"Female": 1, "Male": 0},
                          drop_columns=("OtherLoansAtStore", "PurposeOfLoan"), normalize=True),
    "pokec_z": DatasetSpec("fairgnn", "region_job", "I_am_working_in_field", "region",
                           binarize_labels=True, subdir="data/graphs/pokec_z"),
    "pokec_n": DatasetSpec("fairgnn", "region_job_2", "I_am_working_in_field", "region",
                           binarize_labels=True, subdir="data/graphs/pokec_n"),
}


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ForetellError(f"data file not found: {path}; expected the files of the data set there "
                            f"(check --data-dir / --name / --format)")
    return path


def _read_csv(path: Path):
    import pandas as pd

    _need(path)
    try:
        return pd.read_csv(path)
    except pd.errors.ParserError as exc:
        raise ForetellError(f"{path}: malformed CSV ({str(exc).strip().splitlines()[-1]})") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ForetellError(f"{path}: cannot read as CSV ({exc})") from None


def _column(df, column: str, path: Path):
    if column not in df.columns:
        shown = ", ".join(map(str, list(df.columns)[:12]))
        raise ForetellError(f"{path}: no column {column!r}; columns are: {shown}"
                            f"{' ...' if len(df.columns) > 12 else ''}")
    return df[column]


def _line_of(df, position: int) -> int:
    return int(position) + 2  # header is line 1


def encode_labels(values, path: Path, column: str, label_map=None, binarize=False) -> np.ndarray:
    """Raw label column -> int64 classes with -1 for unknown (negative or missing values)."""
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if label_map is not None and v in label_map:
            out[i] = label_map[v]
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ForetellError(f"{path}, line {i + 2}: label {column!r} is {v!r}, expected an integer "
                                f"class (negative = unknown)") from None
        if not np.isfinite(f):
            out[i] = -1
            continue
        if f != int(f):
            raise ForetellError(f"{path}, line {i + 2}: label {column!r} is {v!r}, expected an integer class")
        c = int(f)
        out[i] = -1 if c < 0 else (min(c, 1) if binarize else c)
    known = np.unique(out[out >= 0])
    if len(known) < 2:
        raise ForetellError(f"{path}: label column {column!r} has {len(known)} known class(es); need at least 2")
    if known.max() >= len(known) and not binarize:
        remap = {c: i for i, c in enumerate(known)}
        out = np.array([remap.get(c, -1) for c in out], dtype=np.int64)
    return out


def encode_sensitive(values, path: Path, column: str, sensitive_map=None) -> np.ndarray:
    """Raw sensitive column -> {0, 1} with -1 for unknown; anything else is a clear error.

    With a map, values outside it are errors. Without one, numeric values must be 0/1 (negative or
    empty = unknown); a text column must have exactly two distinct values (sorted -> 0, 1).
    """
    vals = list(values)
    if sensitive_map is not None:
        out = np.empty(len(vals), dtype=np.int64)
        for i, v in enumerate(vals):
            if v not in sensitive_map:
                raise ForetellError(f"{path}, line {i + 2}: sensitive {column!r} is {v!r}; accepted: "
                                    f"{', '.join(map(repr, sensitive_map))}")
            out[i] = sensitive_map[v]
        return out
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals)
    if numeric:
        out = np.empty(len(vals), dtype=np.int64)
        for i, v in enumerate(vals):
            if not np.isfinite(v) or v < 0:
                out[i] = -1
            elif v in (0, 1):
                out[i] = int(v)
            else:
                raise ForetellError(f"{path}, line {i + 2}: sensitive attribute {column!r} is {v!r}; it must "
                                    f"be binary (0/1, negative = unknown)")
        return out
    distinct = sorted({str(v) for v in vals if isinstance(v, str)})
    if len(distinct) != 2:
        bad = next(i for i, v in enumerate(vals) if isinstance(v, str) and str(v) not in distinct[:2])
        raise ForetellError(f"{path}, line {bad + 2}: sensitive attribute {column!r} has {len(distinct)} "
                            f"distinct values ({', '.join(distinct[:5])}); it must be binary")
    return np.array([distinct.index(v) if isinstance(v, str) else -1 for v in vals], dtype=np.int64)


def read_edge_file(path: Path) -> np.ndarray:
    """Whitespace-separated pairs, one per line (ints or floats like ``1.0e+00``) -> int64 (E, 2)."""
    _need(path)
    import warnings

    try:  # fast path; on any problem fall through to the line scan that names the bad line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(path, ndmin=2, comments="#")
        if arr.ndim == 2 and arr.shape[1] == 2 and len(arr) and np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
    except ValueError:
        pass
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != 2:
                raise ForetellError(f"{path}, line {lineno}: expected two node ids, got {line.strip()[:60]!r}")
            try:
                a, b = float(parts[0]), float(parts[1])
            except ValueError:
                raise ForetellError(f"{path}, line {lineno}: node ids must be numbers, got {line.strip()[:60]!r}") from None
            if a != int(a) or b != int(b):
                raise ForetellError(f"{path}, line {lineno}: node ids must be integers, got {line.strip()[:60]!r}")
            rows.append((int(a), int(b)))
    if not rows:
        raise ForetellError(f"{path}: no edges found")
    return np.asarray(rows, dtype=np.int64)


def _map_ids(edges: np.ndarray, id_to_row: dict | None, n: int, offset: int, path: Path) -> np.ndarray:
    if id_to_row is None:
        out = edges - offset
        bad = np.flatnonzero((out < 0).any(1) | (out >= n).any(1))
        if len(bad):
            raise ForetellError(f"{path}, edge {bad[0] + 1}: node id {edges[bad[0]].tolist()} outside "
                                f"[{offset}, {n - 1 + offset}] (the CSV has {n} rows)")
        return out
    out = np.empty_like(edges)
    for k, (a, b) in enumerate(edges):
        if a not in id_to_row or b not in id_to_row:
            raise ForetellError(f"{path}, edge {k + 1}: node id {a if a not in id_to_row else b} is not a "
                                f"user_id of the CSV")
        out[k] = (id_to_row[a], id_to_row[b])
    return out


def _user_ids(df, path: Path) -> np.ndarray:
    """The ``user_id`` column as int64 node ids: every value an integer, no id twice."""
    col = _column(df, "user_id", path)
    if col.dtype == np.int64:
        ids = col.to_numpy()
    else:
        ids = np.empty(len(col), dtype=np.int64)
        for i, v in enumerate(col):
            try:
                value = int(str(v).strip())
            except ValueError:
                try:
                    f = float(v)
                    value = int(f) if np.isfinite(f) and f == int(f) else None
                except (TypeError, ValueError):
                    value = None
            if value is None or not -2**63 <= value < 2**63:
                raise ForetellError(f"{path}, line {i + 2}: user_id is {v!r}; accepted: an integer node id "
                                    f"(one per row, as used in the relationship file)")
            ids[i] = value
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.flatnonzero(np.isin(ids, ids[first[counts > 1]]))
        a, b = int(dup[0]), int(next(j for j in dup[1:] if ids[j] == ids[dup[0]]))
        raise ForetellError(f"{path}, line {b + 2}: duplicate user_id {ids[b]} (also on line {a + 2}); each row "
                            f"needs its own user_id")
    return ids


def _check_drop_columns(df, drop_columns, path: Path) -> None:
    for c in drop_columns:
        if c not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:12]))
            raise ForetellError(f"{path}: no column {c!r} to drop (--drop-columns); columns are: {shown}"
                                f"{' ...' if len(df.columns) > 12 else ''}")


def _check_roles(label_column: str, sensitive_column: str, reserved: str | None = None) -> None:
    """The label and the sensitive attribute are two different columns, neither the node-id column."""
    if label_column == sensitive_column:
        raise ForetellError(f"the label column and the sensitive column are both {label_column!r}; they must be "
                            f"two different columns")
    if reserved is not None and reserved in (label_column, sensitive_column):
        raise ForetellError(f"column {reserved!r} holds the node ids; it cannot be the label or the sensitive "
                            f"column")


def _numeric_features(df, columns, path: Path) -> np.ndarray:
    import pandas as pd

    if not columns:
        raise ForetellError(f"{path}: no feature columns left once the label, sensitive, id and dropped columns "
                            f"are removed (columns: {', '.join(map(str, list(df.columns)[:12]))}"
                            f"{' ...' if len(df.columns) > 12 else ''}); NIFA needs at least one numeric feature")
    for c in columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            pos = next(i for i, v in enumerate(df[c]) if not _is_number(v))
            raise ForetellError(f"{path}, line {pos + 2}: feature column {c!r} is not numeric ({df[c].iloc[pos]!r}); "
                                f"drop it with --drop-columns {c}")
    x = df[columns].to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        r = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise ForetellError(f"{path}, line {r + 2}: missing or non-finite feature value")
    return x


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _build(x, y, sens, edges: np.ndarray, name: str, *, keep_lcc: bool = False):
    import scipy.sparse as sp
    import torch
    from torch_geometric.data import Data

    n = len(y)
    edges = edges[edges[:, 0] != edges[:, 1]]
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float32)
    if keep_lcc:
        from scipy.sparse.csgraph import connected_components

        _, comp = connected_components(adj, directed=False)
        keep = np.flatnonzero(comp == np.argmax(np.bincount(comp)))
        adj = adj[keep][:, keep]
        x, y, sens = x[keep], y[keep], sens[keep]
    coo = adj.tocoo()
    edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    if sp.issparse(x):
        x = x.tocsr().astype(np.float32)
        integer = bool(np.all(np.mod(x.data, 1) == 0))
        from foretell.nifa.graph import to_torch

        xt = to_torch(x)
    else:
        integer = bool(np.all(np.mod(x, 1) == 0))
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return Data(x=xt, y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
                sens=torch.from_numpy(np.asarray(sens, dtype=np.int64)), edge_index=edge_index,
                num_nodes=len(y), name=name, integer_features=integer)


def load_fairgnn(data_dir, name: str, label_column: str, sensitive_column: str, *, label_map=None,
                 binarize_labels: bool = False, sensitive_map=None, drop_columns=()):
    """FairGNN format: ``<name>.csv`` with ``user_id`` + ``<name>_relationship.txt`` of user ids."""
    _check_roles(label_column, sensitive_column, "user_id")
    d = Path(data_dir)
    csv = d / f"{name}.csv"
    df = _read_csv(csv)
    ids = _user_ids(df, csv)
    y = encode_labels(_column(df, label_column, csv).to_numpy(), csv, label_column, label_map, binarize_labels)
    s = encode_sensitive(_column(df, sensitive_column, csv).to_list(), csv, sensitive_column, sensitive_map)
    _check_drop_columns(df, drop_columns, csv)
    drop = {"user_id", label_column, sensitive_column, *drop_columns}
    x = _numeric_features(df, [c for c in df.columns if c not in drop], csv)
    rel = d / f"{name}_relationship.txt"
    edges = _map_ids(read_edge_file(rel), {int(v): i for i, v in enumerate(ids)}, len(df), 0, rel)
    return _build(x, y, s, edges, name)


def load_pygdebias(data_dir, name: str, label_column: str, sensitive_column: str, *, label_map=None,
                   binarize_labels: bool = False, sensitive_map=None, drop_columns=()):
    """PyGDebias format: ``<name>.csv`` (row order = node id) + ``<name>_edges.txt`` (0-based ids)."""
    _check_roles(label_column, sensitive_column)
    d = Path(data_dir)
    csv = d / f"{name}.csv"
    df = _read_csv(csv)
    y = encode_labels(_column(df, label_column, csv).to_numpy(), csv, label_column, label_map, binarize_labels)
    s = encode_sensitive(_column(df, sensitive_column, csv).to_list(), csv, sensitive_column, sensitive_map)
    _check_drop_columns(df, drop_columns, csv)
    drop = {label_column, sensitive_column, *drop_columns}
    x = _numeric_features(df, [c for c in df.columns if c not in drop], csv)
    ef = d / f"{name}_edges.txt"
    edges = _map_ids(read_edge_file(ef), None, len(df), 0, ef)
    return _build(x, y, s, edges, name)


def load_dblp(data_dir, name: str = "dblp", label_column: str = "label", sensitive_column: str = "gender", *,
              label_map=None, binarize_labels: bool = False, sensitive_map=None, drop_columns=()):
    """FA-GNN's DBLP release: ``<name>.csv`` (1-based ``index``), ``<name>_relationship.txt``,
    ``<name>_csr_emb.npz`` (sparse author-term counts). Keeps the largest connected component."""
    import scipy.sparse as sp

    if drop_columns:
        raise ForetellError(f"drop_columns {', '.join(drop_columns)} does not apply to the dblp format: its features "
                            f"come from {name}_csr_emb.npz, not from CSV columns")
    _check_roles(label_column, sensitive_column, "index")
    d = Path(data_dir)
    csv = d / f"{name}.csv"
    df = _read_csv(csv)
    index = _column(df, "index", csv).to_numpy()
    if not np.array_equal(index, np.arange(1, len(df) + 1)):
        bad = int(np.flatnonzero(index != np.arange(1, len(df) + 1))[0])
        raise ForetellError(f"{csv}, line {bad + 2}: column 'index' must count 1, 2, 3, ... (got {index[bad]!r})")
    y = encode_labels(_column(df, label_column, csv).to_numpy(), csv, label_column,
                      label_map if label_map is not None else PRESETS["dblp"].label_map, binarize_labels)
    s = encode_sensitive(_column(df, sensitive_column, csv).to_list(), csv, sensitive_column,
                         sensitive_map if sensitive_map is not None else PRESETS["dblp"].sensitive_map)
    npz = _need(d / f"{name}_csr_emb.npz")
    try:
        z = np.load(npz)
        x = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(v) for v in z["shape"]))
    except (KeyError, ValueError, OSError) as exc:
        raise ForetellError(f"{npz}: not a scipy CSR .npz (data/indices/indptr/shape): {exc}") from None
    if x.shape[0] != len(df):
        raise ForetellError(f"{npz}: has {x.shape[0]} rows but {csv} has {len(df)} authors")
    if x.shape[1] == 0:
        raise ForetellError(f"{npz}: has no feature columns; NIFA needs at least one feature")
    rel = d / f"{name}_relationship.txt"
    edges = _map_ids(read_edge_file(rel), None, len(df), 1, rel)
    return _build(x, y, s, edges, name, keep_lcc=True)


LOADERS = {"fairgnn": load_fairgnn, "pygdebias": load_pygdebias, "dblp": load_dblp}


def load_graph(fmt: str, data_dir, name: str, label_column: str, sensitive_column: str, **kw):
    """Load ``name`` from ``data_dir`` in format ``fmt`` (fairgnn, pygdebias or dblp)."""
    if fmt not in LOADERS:
        raise ForetellError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if not Path(data_dir).is_dir():
        raise ForetellError(f"data directory not found: {data_dir}")
    return LOADERS[fmt](data_dir, name, label_column, sensitive_column, **kw)


def load_preset(dataset: str, data_dir: str | os.PathLike | None = None, shared: str | None = None):
    """Load a named data set (dblp, german, pokec_z, pokec_n) from ``data_dir`` or the shared folder."""
    if dataset not in PRESETS:
        raise ForetellError(f"unknown dataset {dataset!r}; accepted: {', '.join(PRESETS)} "
                            f"(or --format/--data-dir/--name for your own files)")
    spec = PRESETS[dataset]
    if data_dir is None:
        from foretell.core.paths import shared_dir

        data_dir = shared_dir(shared, must_exist=spec.subdir) / spec.subdir
    data = load_graph(spec.format, data_dir, spec.name, spec.label_column, spec.sensitive_column,
                      label_map=spec.label_map, binarize_labels=spec.binarize_labels,
                      sensitive_map=spec.sensitive_map, drop_columns=spec.drop_columns)
    data.name = dataset
    if spec.normalize:
        normalize_features(data)
    return data


def normalize_features(data):
    """PyGDebias/NIFTY ``feature_norm`` in place: each dense column to [-1, 1]."""
    x = data.x
    lo, hi = x.min(0).values, x.max(0).values
    data.x = 2 * (x - lo) / (hi - lo).clamp_min(1e-12) - 1
    data.integer_features = False
    return data
