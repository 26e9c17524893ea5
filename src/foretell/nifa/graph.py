"""Sparse-graph helpers shared by the attack and the victims: GCN normalisation, row blocks,
k-hop regions and sparse-feature products (scipy CSR in, torch CSR out).

The scipy structures are host-side constants built once per graph; tensors on a GPU are read back
for them (``.cpu()``, a no-op on the CPU) and results go back to the tensors' device."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def adjacency(edge_index: torch.Tensor, num_nodes: int) -> sp.csr_matrix:
    """Binary symmetric adjacency (no self loops) as scipy CSR."""
    ei = edge_index.cpu().numpy()
    a = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])), shape=(num_nodes, num_nodes))
    a = ((a + a.T) > 0).astype(np.float32)
    a.setdiag(0)
    a.eliminate_zeros()
    return a.tocsr()


def gcn_norm(edge_index: torch.Tensor, num_nodes: int) -> sp.csr_matrix:
    """D^-1/2 (A + I) D^-1/2, the propagation matrix of GCN, as scipy CSR (float32)."""
    a = adjacency(edge_index, num_nodes) + sp.eye(num_nodes, dtype=np.float32, format="csr")
    d = np.asarray(a.sum(1)).ravel() ** -0.5
    return (sp.diags(d) @ a @ sp.diags(d)).astype(np.float32).tocsr()


def to_torch(m: sp.spmatrix, device=None) -> torch.Tensor:
    """scipy sparse -> torch sparse CSR (float32), on ``device`` (default: the CPU)."""
    import warnings

    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        t = torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                    torch.from_numpy(m.indices.astype(np.int64)),
                                    torch.from_numpy(m.data.astype(np.float32)), size=m.shape,
                                    check_invariants=False)
    return t if on_cpu(device) else t.to(device)


def to_scipy(x: torch.Tensor) -> sp.csr_matrix:
    """torch sparse (CSR or COO) or dense tensor (any device) -> scipy CSR (float32)."""
    x = x.cpu()
    if x.layout == torch.sparse_csr:
        return sp.csr_matrix((x.values().numpy(), x.col_indices().numpy(), x.crow_indices().numpy()),
                             shape=tuple(x.shape))
    if x.is_sparse:
        x = x.coalesce()
        i = x.indices().numpy()
        return sp.csr_matrix((x.values().numpy(), (i[0], i[1])), shape=tuple(x.shape))
    return sp.csr_matrix(x.detach().numpy())


def on_cpu(device) -> bool:
    """Whether ``device`` (None, a string or a ``torch.device``) is the CPU."""
    return device is None or torch.device(device).type == "cpu"


def device_of(x) -> torch.device:
    """The device of a tensor; the CPU for anything else (scipy / numpy)."""
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def data_to(data, device):
    """PyG ``data`` on ``device``: ``data`` itself when it is there already, else a moved shallow copy
    (``Data.to`` moves in place; the caller's object stays where it is)."""
    import copy

    device = torch.device(device)
    x = data.x.device
    if x.type == device.type and (device.index is None or x.index == device.index):
        return data
    return copy.copy(data).to(device)


def neighbourhood(prop: sp.csr_matrix, nodes: np.ndarray) -> np.ndarray:
    """Sorted nodes reachable in one step of ``prop`` (self loops included) from ``nodes``."""
    return np.unique(prop[np.asarray(nodes)].indices)


def is_sparse(x: torch.Tensor) -> bool:
    """Whether ``x`` is a torch sparse tensor (CSR or COO)."""
    return x.layout == torch.sparse_csr or x.is_sparse


def feature_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w for dense or sparse (CSR/COO) ``x``."""
    if is_sparse(x):
        return torch.sparse.mm(x, w)
    return x @ w


def rows(x: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of a dense or sparse-CSR feature matrix (sparse stays sparse), on ``x``'s device."""
    if x.layout == torch.sparse_csr:
        return to_torch(to_scipy(x)[np.asarray(index)], x.device)
    return x[torch.as_tensor(index, device=x.device)]
