"""Does a shorter Bayesian-GCN schedule select the same NIFA targets as the paper's 500 epochs?

Trains the Bayesian GCN once for the full schedule on DBLP (seed/split 0, training labels only),
records the node uncertainties after the epochs listed in --checkpoints, and reports for each the
fraction of the full-schedule targets (top k=50% per sensitive group) that it also selects.
Writes benchmarks/results/nifa_uncertainty_overlap_<dataset>.json.

    python benchmarks/nifa_uncertainty_overlap.py [--epochs 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def overlap(a: dict, b: dict) -> float:
    inter = sum(len(np.intersect1d(a[g], b[g])) for g in (0, 1))
    return inter / max(1, sum(len(b[g]) for g in (0, 1)))


def main() -> None:
    from foretell.core.report import write_json
    from foretell.core.paths import repo_root
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.uncertainty import UncertaintyConfig, node_uncertainty, top_k_by_group

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="dblp")
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checkpoints", default="5,10,20,30,50,75,100,150,200,300,400")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None,
                    help="default: benchmarks/results/nifa_uncertainty_overlap_<dataset>.json")
    args = ap.parse_args()
    args.json = args.json or str(repo_root() / f"benchmarks/results/nifa_uncertainty_overlap_{args.dataset}.json")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    data = add_split(load_preset(args.dataset), args.seed)
    train = np.flatnonzero(data.train_mask.numpy())
    cand = np.flatnonzero(((data.y >= 0) & (data.sens >= 0)).numpy())
    checks = tuple(int(c) for c in args.checkpoints.split(",") if int(c) < args.epochs)
    t0 = time.perf_counter()
    res = node_uncertainty(data, train, cand, UncertaintyConfig(epochs=args.epochs, lr=args.lr), args.seed,
                           history_at=checks)
    seconds = time.perf_counter() - t0
    sens = data.sens.numpy()
    full = top_k_by_group(res["uncertainty"], cand, sens, 0.5)
    rows = {}
    for e, unc in sorted(res["history"].items()):
        rows[str(e)] = overlap(top_k_by_group(unc, cand, sens, 0.5), full)
        print(f"epoch {e}: target overlap with {args.epochs}-epoch schedule = {rows[str(e)]:.4f}")
    write_json(args.json, {"dataset": args.dataset, "seed": args.seed, "full_epochs": args.epochs,
                           "lr": args.lr, "k": 0.5, "num_candidates": int(len(cand)),
                           "seconds_full_schedule": seconds, "seconds_per_epoch": seconds / args.epochs,
                           "overlap_with_full": rows})


if __name__ == "__main__":
    main()
