"""The train/val/test split: a seeded random permutation of the labelled nodes.

Nodes with a known label (``y >= 0``) are shuffled with ``numpy.random.default_rng(seed)`` and cut
into ``train_frac`` / ``val_frac`` / the rest (default 50% / 25% / 25%). Unlabelled nodes are in no
split. The split depends only on ``seed`` and the labels, so the same seed gives the same split.
"""

from __future__ import annotations

import numpy as np
import torch

from foretell.core.errors import ForetellError


def split_masks(y: torch.Tensor, seed: int, train_frac: float = 0.5, val_frac: float = 0.25):
    """Boolean (train, val, test) masks over the nodes of ``y`` (-1 = unlabelled), on ``y``'s device."""
    from foretell.nifa.validate import check_seed, is_real

    check_seed("add_split", seed)
    if not (is_real(train_frac) and is_real(val_frac)
            and 0 < train_frac < 1 and 0 < val_frac < 1 and train_frac + val_frac < 1):
        raise ForetellError(f"split fractions train={train_frac}, val={val_frac} must be in (0, 1) and sum to < 1")
    labelled = np.flatnonzero(y.cpu().numpy() >= 0)
    if len(labelled) < 4:
        raise ForetellError(f"only {len(labelled)} labelled nodes; need at least 4 to split")
    perm = np.random.default_rng(seed).permutation(labelled)
    n_tr = int(round(train_frac * len(perm)))
    n_va = int(round(val_frac * len(perm)))
    masks = []
    for idx in (perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]):
        m = torch.zeros(len(y), dtype=torch.bool)
        m[torch.from_numpy(idx)] = True
        masks.append(m.to(y.device))
    return tuple(masks)


def add_split(data, seed: int = 0, train_frac: float = 0.5, val_frac: float = 0.25):
    """Set ``train_mask``, ``val_mask``, ``test_mask`` on ``data`` (in place) and return it.

    ``data`` needs ``y`` (``torch.long``, -1 = unlabelled); ``seed`` an integer in 0 .. 2**32 - 1."""
    from foretell.nifa.validate import check_graph

    check_graph(data, "add_split", fields=("y",), other_masks=False, classes=False)
    data.train_mask, data.val_mask, data.test_mask = split_masks(data.y, seed, train_frac, val_frac)
    data.split_seed = int(seed)
    return data


def labelled_subgraph(data, num_nodes: int, seed: int = 0):
    """A connected real subgraph for quick runs: breadth-first ``num_nodes`` nodes (from the
    highest-degree one) of the graph induced by the nodes with known label and sensitive value.
    Feature columns that are all zero in it are dropped. ``seed`` is only used for the split.
    Built on the host; the subgraph is on ``data``'s device."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph

    from foretell.nifa.graph import adjacency, data_to, to_scipy, to_torch
    from foretell.nifa.validate import check_graph, check_int

    check_int("labelled_subgraph", "num_nodes", num_nodes, 4)
    check_graph(data, "labelled_subgraph", other_masks=False)
    dev = data.x.device
    data = data_to(data, "cpu")
    keep = np.flatnonzero(((data.y >= 0) & (data.sens >= 0)).numpy())
    a = adjacency(data.edge_index, data.num_nodes)[keep][:, keep]
    order = breadth_first_order(a, int(np.argmax(np.asarray(a.sum(1)).ravel())), directed=False,
                                return_predecessors=False)
    nodes = torch.as_tensor(np.sort(keep[order[:num_nodes]]))
    ei, _ = subgraph(nodes, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes)
    sparse = data.x.layout == torch.sparse_csr
    x = to_scipy(data.x)[nodes.numpy()] if sparse else sp.csr_matrix(data.x[nodes].numpy())
    cols = np.asarray((x != 0).sum(0)).ravel() > 0
    x = x[:, cols]
    xt = to_torch(x) if sparse else torch.from_numpy(x.toarray())
    g = Data(x=xt, y=data.y[nodes], sens=data.sens[nodes], edge_index=ei, num_nodes=len(nodes),
             integer_features=bool(getattr(data, "integer_features", False)), name=getattr(data, "name", None))
    return add_split(data_to(g, dev), seed)
