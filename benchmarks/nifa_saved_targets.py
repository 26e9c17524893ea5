"""Target overlap of saved NIFA attacks, with each other and with saved full-schedule uncertainties.

No training: reads poisoned graphs written by ``foretell nifa run/attack --save-poisoned`` (their
``targets``) and an ``.npz`` of full-schedule uncertainties written by
``benchmarks/nifa_uncertainty_overlap.py --save-uncertainty`` (arrays ``A``, ``B``; e.g. the paper's
lr 1e-3 x 500 schedule with the old Xavier gain 1). Reports, for targets = top k per sensitive group:

* ``pairwise``: overlap between the saved attacks (different seeds, same schedule);
* ``vs_npz``: overlap of each saved attack's targets with the npz runs' targets.

    python benchmarks/nifa_saved_targets.py reports/nifa/dblp_s0.pt ... --npz reports/nifa/dblp_full_unc.npz
Writes benchmarks/results/nifa_dblp_saved_targets.json.
"""

from __future__ import annotations

import argparse

import numpy as np


def overlap(a: dict, b: dict) -> float:
    """Fraction of the targets in ``b`` that ``a`` also selects (both {group: nodes})."""
    return sum(len(np.intersect1d(a[g], b[g])) for g in (0, 1)) / max(1, sum(len(b[g]) for g in (0, 1)))


def main() -> None:
    from foretell.core.paths import repo_root
    from foretell.core.report import write_json
    from foretell.nifa.attack import PoisonedGraph
    from foretell.nifa.uncertainty import top_k_by_group

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("graphs", nargs="+", help="poisoned graphs (.pt)")
    ap.add_argument("--npz", default=None, help="full-schedule uncertainties (arrays A, B)")
    ap.add_argument("--note", default="", help="free text stored in the report (e.g. what the npz holds)")
    ap.add_argument("--json", default=str(repo_root() / "benchmarks/results/nifa_dblp_saved_targets.json"))
    args = ap.parse_args()
    graphs = {p: PoisonedGraph.load(p) for p in args.graphs}
    names = {p: f"seed{g.info['config']['seed']}" for p, g in graphs.items()}
    report = {"graphs": {names[p]: {"path": p, "config": g.info["config"],
                                    "targets_per_group": {str(k): int(len(v)) for k, v in g.targets.items()}}
                         for p, g in graphs.items()},
              "npz": args.npz, "note": args.note}
    ps = list(graphs)
    report["pairwise"] = {f"{names[a]}-{names[b]}": overlap(graphs[a].targets, graphs[b].targets)
                          for i, a in enumerate(ps) for b in ps[i + 1:]}
    vals = list(report["pairwise"].values())
    report["pairwise_mean"] = float(np.mean(vals)) if vals else None
    if args.npz:
        first = graphs[ps[0]]
        k = first.info["config"]["k"]
        data_sens = first.data.sens.numpy()
        data_y = first.data.y.numpy()
        cand = np.flatnonzero((data_y >= 0) & (data_sens >= 0))
        saved = np.load(args.npz)
        npz_top = {n: top_k_by_group(saved[n], cand, data_sens, k) for n in saved.files}
        report["vs_npz"] = {names[p]: {n: overlap(g.targets, t) for n, t in npz_top.items()} for p, g in graphs.items()}
        report["npz_pairwise"] = {f"{a}-{b}": overlap(npz_top[a], npz_top[b])
                                  for i, a in enumerate(saved.files) for b in saved.files[i + 1:]}
    for key in ("pairwise", "pairwise_mean", "vs_npz", "npz_pairwise"):
        print(key, report.get(key))
    write_json(args.json, report)
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
