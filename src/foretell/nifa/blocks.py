"""Exact row blocks of a 2-layer GCN: only the rows a loss reads, with constant products cached.

A 2-layer GCN's outputs at ``out_nodes`` need layer 1 only on their 1-hop rows ``r1`` and the
features only on the 2-hop rows ``r2``. Layer 1 there is ``P1 X W`` with the constant
``P1 = A_hat[r1, r2]`` and ``X = X[r2]``; it is computed either

* ``"dense"``: ``(P1 X) W`` with ``P1 X`` propagated once and stored dense (dense products are about
  an order of magnitude faster per multiply-add than sparse ones on CPU), or
* ``"sparse"``: ``P1 (X W)``, two sparse products (better when ``P1 X`` fills in: DBLP's
  term counts have 0.25 M non-zeros in X[r2] but 1.56 M in ``P1 X``).

``"auto"`` picks dense when its multiply-adds ``|r1| * F`` are at most ``DENSE_SPEEDUP`` times the
sparse path's ``nnz(X[r2]) + nnz(P1)`` (and the matrix fits in ``DENSE_MAX_BYTES``). Sparse
products run in scipy with a precomputed transpose for the backward pass (``ConstSpMM``): on this
CPU that was 2-3x faster than torch's CSR product, which re-sorts the transpose on every backward;
with more than one torch thread they are split by rows over a thread pool (scipy releases the GIL).

On a GPU (the device of the features / of ``device=``) nothing runs in scipy after set-up: constant
sparse matrices become torch CSR tensors on the device with their transpose precomputed (the same
``ConstSpMM`` idea, with ``torch.sparse.mm``), and ``"auto"`` picks the dense ``P1 X`` whenever it
fits in ``DEVICE_DENSE_MAX_BYTES`` (a dense product is cheap there), the sparse factors otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from foretell.core.errors import ForetellError
from foretell.nifa.graph import device_of, is_sparse, neighbourhood, on_cpu, to_scipy, to_torch

DENSE_SPEEDUP = 8.0
DENSE_MAX_BYTES = 1 << 30
DEVICE_DENSE_MAX_BYTES = 1 << 28
BLOCK_MODES = ("auto", "dense", "sparse")


_POOLS: dict = {}
PARALLEL_MIN_WORK = 2_000_000      # nnz x columns below which a product runs in one thread


def thread_pool(threads: int):
    """One shared worker pool per thread count for the NIFA sparse work (created on first use)."""
    from concurrent.futures import ThreadPoolExecutor

    return _POOLS.get(threads) or _POOLS.setdefault(threads, ThreadPoolExecutor(threads, "nifa"))


class RowSplitCSR:
    """A scipy CSR matrix cut into row slices so that ``self @ w`` can use ``torch.get_num_threads()``
    threads (scipy's sparse products release the GIL but run single-threaded)."""

    def __init__(self, m: sp.csr_matrix, parts: int = 4):
        self.m = m
        cuts = np.searchsorted(m.indptr, np.linspace(0, m.nnz, parts + 1)[1:-1])   # equal non-zeros
        self.bounds = [0, *sorted(set(int(c) for c in cuts) - {0, m.shape[0]}), m.shape[0]]
        self.slices = [m[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def __matmul__(self, w: np.ndarray) -> np.ndarray:
        threads = torch.get_num_threads()
        if threads <= 1 or len(self.slices) == 1 or self.m.nnz * w.shape[1] < PARALLEL_MIN_WORK:
            return np.asarray(self.m @ w)
        pool = thread_pool(threads)
        out = np.empty((self.m.shape[0], w.shape[1]), dtype=np.result_type(self.m.dtype, w.dtype))

        def part(i):
            out[self.bounds[i]:self.bounds[i + 1]] = self.slices[i] @ w

        list(pool.map(part, range(len(self.slices))))
        return out


class ConstSpMM(torch.autograd.Function):
    """``a @ w`` for a constant sparse ``a`` (:class:`RowSplitCSR`) with its precomputed transpose
    ``at``; the gradient flows to ``w`` only (float32 throughout)."""

    @staticmethod
    def forward(ctx, a, at, w):
        ctx.at = at
        return torch.from_numpy(a @ w.detach().contiguous().numpy())

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.from_numpy(ctx.at @ grad.contiguous().numpy())


class DeviceConstSpMM(torch.autograd.Function):
    """``a @ w`` for a constant torch CSR ``a`` on a GPU with its precomputed transpose ``at``."""

    @staticmethod
    def forward(ctx, a, at, w):
        ctx.at = at
        return torch.sparse.mm(a, w.detach().contiguous())

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.at, grad.contiguous())


class ConstSparse:
    """A constant sparse matrix; ``self @ w`` is differentiable in the dense ``w``.

    On the CPU (``device`` None or cpu) the products run in scipy (:class:`RowSplitCSR`, attributes
    ``a``/``at``); elsewhere as torch CSR products on ``device`` (attributes ``a_t``/``at_t``)."""

    def __init__(self, m, device=None):
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        at = m.T.tocsr()
        at.sort_indices()
        self.device = torch.device("cpu") if on_cpu(device) else torch.device(device)
        if self.device.type == "cpu":
            self.a, self.at = RowSplitCSR(m), RowSplitCSR(at)
        else:
            self.a_t, self.at_t = to_torch(m, self.device), to_torch(at, self.device)
        self.shape = m.shape
        self.nnz = m.nnz

    def __matmul__(self, w: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return ConstSpMM.apply(self.a, self.at, w)
        return DeviceConstSpMM.apply(self.a_t, self.at_t, w)


def constant_features(x: torch.Tensor) -> ConstSparse | None:
    """A sparse feature matrix as :class:`ConstSparse` on ``x``'s device (``None`` for dense ``x``)."""
    return ConstSparse(to_scipy(x), x.device) if is_sparse(x) else None


def as_scipy_features(x) -> sp.csr_matrix:
    """Features (torch dense/sparse or scipy) as scipy CSR float32."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32)
    if isinstance(x, torch.Tensor):
        return to_scipy(x).astype(np.float32)
    return sp.csr_matrix(np.asarray(x, dtype=np.float32))


class FirstLayerInput:
    """The constant part of layer 1 on rows ``r1``: ``P1 @ X`` as a dense matrix or as two sparse
    factors, on ``device`` (default: the CPU). ``self @ w`` = ``P1 X w`` (differentiable in ``w``)."""

    def __init__(self, p1: sp.csr_matrix, x: sp.csr_matrix, mode: str = "auto", device=None):
        if mode not in BLOCK_MODES:
            raise ForetellError(f"unknown block mode {mode!r}; accepted: {', '.join(BLOCK_MODES)}")
        rows, feats = p1.shape[0], x.shape[1]
        if mode == "auto" and not on_cpu(device):
            mode = "dense" if rows * feats * 4 <= DEVICE_DENSE_MAX_BYTES else "sparse"
        elif mode == "auto":
            fits = rows * feats * 4 <= DENSE_MAX_BYTES
            mode = "dense" if fits and rows * feats <= DENSE_SPEEDUP * (x.nnz + p1.nnz) else "sparse"
        self.mode = mode
        if mode == "dense":
            ax = torch.from_numpy(np.asarray((p1 @ x).toarray(), dtype=np.float32))
            self.ax = ax if on_cpu(device) else ax.to(device)
        else:
            self.x, self.p1 = ConstSparse(x, device), ConstSparse(p1, device)

    def __matmul__(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return self.ax @ w
        return self.p1 @ (self.x @ w)


class GCNBlock:
    """Rows needed to compute a 2-layer GCN exactly at ``out_nodes`` of the graph ``prop``.

    ``layer1 @ w`` gives the layer-1 pre-activation on the 1-hop rows ``r1`` (features of the first
    ``num_const`` nodes only when ``num_const`` is given; the rest are returned in ``r2_var``, the
    positions in ``r2`` of nodes whose features change), ``p2 @ h`` propagates to ``out_nodes``.
    The products run on ``device`` (default: the device of ``x``)."""

    def __init__(self, prop: sp.csr_matrix, x, out_nodes: np.ndarray, mode: str = "auto",
                 num_const: int | None = None, device=None):
        device = device_of(x) if device is None else torch.device(device)
        self.device = device
        out_nodes = np.asarray(out_nodes)
        self.r1 = neighbourhood(prop, out_nodes)
        self.r2 = neighbourhood(prop, self.r1)
        p1 = prop[self.r1][:, self.r2]
        const = self.r2 if num_const is None else self.r2[self.r2 < num_const]
        cols = np.arange(len(const))
        self.layer1 = FirstLayerInput(p1[:, cols], as_scipy_features(x)[const], mode, device)
        self.var_nodes = self.r2[len(const):]          # r2 is sorted: variable nodes come last
        self.p1_var = ConstSparse(p1[:, len(const):], device) if len(self.var_nodes) else None
        self.p2 = ConstSparse(prop[out_nodes][:, self.r1], device)
