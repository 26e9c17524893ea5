"""NIFA step 3 (homophily increase): inject b nodes, each wired to d distinct targets of its group."""

from __future__ import annotations

import numpy as np
import torch

from foretell.core.errors import ForetellError


def injected_groups(num_injected: int) -> np.ndarray:
    """Group of each injected node as in the official code: the first b//2 join group 1, the rest 0."""
    g = np.zeros(num_injected, dtype=np.int64)
    g[: num_injected // 2] = 1
    return g


def injection_edges(num_nodes: int, groups: np.ndarray, targets: dict, degree: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(2, 2*b*d) undirected edges: injected node ``num_nodes + i`` -> ``degree`` distinct targets of
    its group (a target may serve several injected nodes), both directions."""
    src, dst = [], []
    for i, g in enumerate(groups):
        pool = np.asarray(targets[int(g)])
        if degree > len(pool):
            raise ForetellError(f"edges per injected node d={degree} exceeds the {len(pool)} targets of "
                                f"sensitive group {g}; lower --edges-per-injected or raise --k")
        picked = rng.choice(pool, size=degree, replace=False)
        src.append(np.full(degree, num_nodes + i))
        dst.append(picked)
    src, dst = np.concatenate(src), np.concatenate(dst)
    return np.vstack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)


def append_nodes(data, edges: np.ndarray, new_x: torch.Tensor, num_new: int):
    """A copy of ``data`` with ``num_new`` nodes (features ``new_x``, unknown label and sensitive
    value, in no split) and the extra ``edges`` appended, on ``data``'s device."""
    from foretell.nifa.graph import to_scipy, to_torch
    import scipy.sparse as sp

    out = data.clone()
    dev = data.x.device
    if data.x.layout == torch.sparse_csr:
        out.x = to_torch(sp.vstack([to_scipy(data.x), sp.csr_matrix(new_x.detach().cpu().numpy())]).tocsr(), dev)
    else:
        out.x = torch.cat([data.x, new_x.detach().to(dev, data.x.dtype)], 0)
    pad = torch.full((num_new,), -1, dtype=torch.long, device=data.y.device)
    out.y = torch.cat([data.y, pad])
    out.sens = torch.cat([data.sens, pad.to(data.sens.device)])
    for key in ("train_mask", "val_mask", "test_mask"):
        if key in data:
            out[key] = torch.cat([data[key], torch.zeros(num_new, dtype=torch.bool, device=data[key].device)])
    out.edge_index = torch.cat([data.edge_index, torch.as_tensor(edges, dtype=torch.long,
                                                                 device=data.edge_index.device)], 1)
    out.num_nodes = data.num_nodes + num_new
    return out
