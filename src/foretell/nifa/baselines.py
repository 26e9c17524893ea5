"""Baseline poisoning attacks reported beside NIFA.

* ``random_injection``: the same node and edge budget as NIFA (b nodes, d edges each) wired to
  uniformly random real nodes, with features copied from uniformly random real nodes.
* ``fagnn_injection``: FA-GNN (Hussain et al., ICDM 2022) inter-group link injection with
  direction ``y1s1`` and strategy ``DD``: new edges between nodes with (label 1, sensitive 1) and
  nodes with a different label and a different sensitive value (label 0, sensitive 0), at FA-GNN's
  usual budget of 5% of the existing (undirected) edges; no nodes are added.

Both use the labels of all labelled nodes (FA-GNN's gray-box setting) and never modify the input.
The sampling runs on the host; the poisoned graph is on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

from foretell.core.errors import ForetellError
from foretell.nifa.injection import append_nodes


def random_injection(data, num_injected: int, degree: int, seed: int):
    """(poisoned Data, injected index) for the random-injection baseline (``num_injected`` and
    ``degree`` integers >= 1, ``degree`` at most the number of nodes)."""
    from foretell.nifa.graph import to_scipy
    from foretell.nifa.validate import check_graph, check_int, check_seed

    who = "random_injection"
    num_injected = check_int(who, "num_injected", num_injected, 1)
    degree = check_int(who, "degree", degree, 1)
    seed = check_seed(who, seed)
    n = check_graph(data, who, classes=False)
    rng = np.random.default_rng(seed)
    if degree > n:
        raise ForetellError(f"edges per injected node ({degree}) exceeds the number of nodes ({n})")
    src, dst = [], []
    for i in range(num_injected):
        t = rng.choice(n, size=degree, replace=False)
        src.append(np.full(degree, n + i))
        dst.append(t)
    src, dst = np.concatenate(src), np.concatenate(dst)
    edges = np.vstack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    donors = rng.choice(n, size=num_injected, replace=True)
    if data.x.layout == torch.sparse_csr:
        new_x = torch.from_numpy(to_scipy(data.x)[donors].toarray())
    else:
        new_x = data.x[torch.as_tensor(donors, device=data.x.device)].clone()
    return append_nodes(data, edges, new_x, num_injected), torch.arange(n, n + num_injected, device=data.x.device)


def fagnn_injection(data, seed: int, rate: float = 0.05, direction: str = "y1s1", strategy: str = "DD"):
    """(poisoned Data, number of added undirected edges) for FA-GNN y1s1/DD edge injection (binary labels;
    ``rate``: a finite number > 0, the added edges as a fraction of the existing ones)."""
    from foretell.nifa.validate import check_graph, check_number, check_seed

    who = "fagnn_injection"
    if direction != "y1s1" or strategy != "DD":
        raise ForetellError(f"only FA-GNN direction y1s1 with strategy DD is implemented, got {direction}/{strategy}")
    seed = check_seed(who, seed)
    rate = check_number(who, "rate", rate, 0.0, low_open=True)
    check_graph(data, who, binary=True)
    rng = np.random.default_rng(seed)
    y, s = data.y.cpu().numpy(), data.sens.cpu().numpy()
    a = np.flatnonzero((y == 1) & (s == 1))
    b = np.flatnonzero((y == 0) & (s == 0))
    if len(a) == 0 or len(b) == 0:
        raise ForetellError("FA-GNN y1s1/DD needs labelled nodes with (y=1, s=1) and (y=0, s=0)")
    ei = data.edge_index.cpu().numpy()
    existing = set(zip(ei[0].tolist(), ei[1].tolist()))
    budget = int(round(rate * ei.shape[1] / 2))
    budget = min(budget, len(a) * len(b))
    added = set()
    tries = 0
    while len(added) < budget and tries < 50 * budget + 100:
        u, v = int(rng.choice(a)), int(rng.choice(b))
        tries += 1
        if (u, v) not in existing and (u, v) not in added:
            added.add((u, v))
    pairs = np.array(sorted(added), dtype=np.int64).reshape(-1, 2).T
    out = data.clone()
    new = torch.from_numpy(np.hstack([pairs, pairs[::-1]])).to(data.edge_index.device)
    out.edge_index = torch.cat([data.edge_index, new], 1)
    return out, int(pairs.shape[1])
