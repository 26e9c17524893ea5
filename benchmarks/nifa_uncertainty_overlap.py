"""Does a shorter Bayesian-GCN schedule select the same NIFA targets as the paper's 500 epochs?

Trains the Bayesian GCN for the full schedule twice on the same split and training labels, with two
different mask/initialisation seeds (``--seed`` and ``--seed + 1``), and records the node
uncertainties after the epochs listed in ``--checkpoints``. Reports

* ``overlap_full_vs_full``: fraction of run A's full-schedule targets (top k=50% per sensitive group)
  that run B's full schedule also selects -- how well the method reproduces its own targets;
* ``overlap_with_full``: for each checkpoint of run A, the overlap with run A's full schedule;
* ``overlap_with_other_full``: for each checkpoint of run A, the overlap with run B's full schedule
  (a shortcut is as good as the full schedule when this matches ``overlap_full_vs_full``);
* ``random_overlap``: the overlap a random choice of the same sizes has in expectation (= k);
* ``shortcuts``: for each ``--shortcuts`` schedule ``LR:EPOCHS`` (run with seed A), the overlap with
  run A's and run B's full schedules and its seconds.

``--init-gain G`` sets the Xavier gain of the full schedules (default: the library's, sqrt(2) as in the
official code since 2026-11-26; the older reports used 1.0); a shortcut ``LR:EPOCHS:GAIN`` runs with
its own gain. ``--compare-npz OLD.npz`` adds ``overlap_with_compared_full``: the overlap of this run's
full-schedule targets with those saved in OLD.npz by an earlier ``--save-uncertainty`` (e.g. gain 1).

``--full-runs 1`` trains only run A (no full-vs-full number); ``--compare-targets A.pt,B.pt`` adds
``overlap_of_saved_targets_with_full``: for each poisoned graph saved by ``foretell nifa run/attack``, the
overlap of its targets with run A's full-schedule targets (e.g. the 5-seed run's default-schedule targets).

``--save-uncertainty PATH.npz`` keeps the full-schedule uncertainties (arrays ``A`` and ``B``);
``--reuse-full PATH.npz --shortcuts ...`` later adds more shortcuts to the same report without
re-running the full schedules.

Writes benchmarks/results/nifa_uncertainty_overlap_<dataset>.json.

    python benchmarks/nifa_uncertainty_overlap.py --dataset german [--epochs 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from foretell.core.argtypes import float_in, int_at_least, seed_int, threads_int


def overlap(a: dict, b: dict) -> float:
    """Fraction of the targets in ``b`` that ``a`` also selects (both {group: nodes})."""
    inter = sum(len(np.intersect1d(a[g], b[g])) for g in (0, 1))
    return inter / max(1, sum(len(b[g]) for g in (0, 1)))


def main() -> None:
    from foretell.core.paths import repo_root
    from foretell.core.report import write_json
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.uncertainty import UncertaintyConfig, node_uncertainty, top_k_by_group

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="dblp")
    ap.add_argument("--epochs", type=int_at_least(1), default=500)
    ap.add_argument("--lr", type=float_in(0.0, 10.0, low_open=True), default=1e-3)
    ap.add_argument("--k", type=float_in(0.0, 1.0, low_open=True), default=0.5)
    ap.add_argument("--checkpoints", default="5,10,20,30,50,75,100,150,200,300,400")
    ap.add_argument("--seed", type=seed_int, default=0, help="mask/init seed of run A (run B uses seed + 1)")
    ap.add_argument("--split-seed", type=seed_int, default=0)
    ap.add_argument("--threads", type=threads_int(1), default=1)
    ap.add_argument("--shortcuts", default="", help="comma-separated LR:EPOCHS schedules to compare, e.g. 0.01:50")
    ap.add_argument("--init-gain", type=float, default=None, help="Xavier gain (default: the library default)")
    ap.add_argument("--full-runs", type=int, choices=(1, 2), default=2, help="full-schedule runs (A only, or A and B)")
    ap.add_argument("--compare-targets", default="", help="comma-separated poisoned-graph files whose targets to compare")
    ap.add_argument("--compare-npz", default=None, help="npz of an earlier --save-uncertainty to compare with")
    ap.add_argument("--save-uncertainty", default=None, help="npz path for the full-schedule uncertainties")
    ap.add_argument("--reuse-full", default=None,
                    help="npz from --save-uncertainty: skip the full schedules and add --shortcuts to the "
                         "existing --json report")
    ap.add_argument("--json", default=None,
                    help="default: benchmarks/results/nifa_uncertainty_overlap_<dataset>.json")
    from foretell.core.device import add_device_argument, parse_args_with_device

    add_device_argument(ap)
    args, device = parse_args_with_device(ap)
    args.json = args.json or str(repo_root() / f"benchmarks/results/nifa_uncertainty_overlap_{args.dataset}.json")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    data = add_split(load_preset(args.dataset), args.split_seed)
    train = np.flatnonzero(data.train_mask.numpy())
    cand = np.flatnonzero(((data.y >= 0) & (data.sens >= 0)).numpy())
    sens = data.sens.numpy()
    data = data.to(device)
    gain = {} if args.init_gain is None else {"init_gain": args.init_gain}
    checks = tuple(int(c) for c in args.checkpoints.split(",") if int(c) < args.epochs)
    runs, seconds, previous = {}, {}, None
    if args.reuse_full:
        # add shortcuts to an existing report: full-schedule uncertainties from --save-uncertainty
        previous = json.loads(Path(args.json).read_text())
        saved = np.load(args.reuse_full)
        runs = {n: {"uncertainty": saved[n], "history": {}} for n in ("A", "B")}
        seconds = previous["seconds_full_schedule"]
    for name, seed in (("A", args.seed), ("B", args.seed + 1))[:args.full_runs]:
        if previous is not None:
            break
        t0 = time.perf_counter()
        runs[name] = node_uncertainty(data, train, cand, UncertaintyConfig(epochs=args.epochs, lr=args.lr, **gain),
                                      seed, history_at=checks)
        seconds[name] = time.perf_counter() - t0
    full = {n: top_k_by_group(r["uncertainty"], cand, sens, args.k) for n, r in runs.items()}
    b_or_a = "B" if "B" in full else "A"
    same = overlap(full["A"], full["B"]) if "B" in full else None
    print(f"full vs full ({args.epochs} epochs, seeds {args.seed}/{args.seed + 1}): {same}")
    own, other = {}, {}
    for e, unc in sorted(runs["A"]["history"].items()):
        top = top_k_by_group(unc, cand, sens, args.k)
        own[str(e)], other[str(e)] = overlap(top, full["A"]), overlap(top, full[b_or_a])
        print(f"epoch {e}: overlap with own full schedule {own[str(e)]:.4f}, with the other seed's "
              f"full schedule {other[str(e)]:.4f}")
    if previous is not None:
        own, other = previous["overlap_with_full"], previous["overlap_with_other_full"]
    shortcuts = {} if previous is None else previous["shortcuts"]
    for spec in filter(None, args.shortcuts.split(",")):
        parts = spec.split(":")
        lr, epochs = float(parts[0]), int(parts[1])
        sgain = {"init_gain": float(parts[2])} if len(parts) > 2 else gain
        t0 = time.perf_counter()
        res = node_uncertainty(data, train, cand, UncertaintyConfig(epochs=epochs, lr=lr, **sgain), args.seed)
        top = top_k_by_group(res["uncertainty"], cand, sens, args.k)
        shortcuts[spec] = {"lr": lr, "epochs": epochs, "init_gain": UncertaintyConfig(**sgain).init_gain,
                           "seconds": time.perf_counter() - t0,
                           "overlap_with_full": overlap(top, full["A"]),
                           "overlap_with_other_full": overlap(top, full[b_or_a]) if "B" in full else None}
        print(f"shortcut lr {lr} x {epochs} epochs: overlap with own full {shortcuts[spec]['overlap_with_full']:.4f}, "
              f"with other seed's full {shortcuts[spec]['overlap_with_other_full']}")
    compared = None
    if args.compare_npz:
        old = np.load(args.compare_npz)
        old_top = {n: top_k_by_group(old[n], cand, sens, args.k) for n in ("A", "B")}
        compared = {f"{a}_vs_old_{b}": overlap(full[a], old_top[b]) for a in full for b in ("A", "B")}
        compared["old_A_vs_old_B"] = overlap(old_top["A"], old_top["B"])
        print("overlap with the compared full schedules:", compared)
    saved_targets = {}
    if args.compare_targets:
        from foretell.nifa.attack import PoisonedGraph

        for path in args.compare_targets.split(","):
            pg = PoisonedGraph.load(path)
            saved_targets[path] = {"overlap_with_full": overlap(pg.targets, full["A"]),
                                   "seed": pg.info["config"]["seed"],
                                   "uncertainty_epochs": pg.info["config"]["uncertainty_epochs"],
                                   "uncertainty_lr": pg.info["config"]["uncertainty_lr"],
                                   "init_gain": pg.info["config"].get("uncertainty_init_gain", 1.0)}
            print(f"saved targets {path}: overlap with full A {saved_targets[path]['overlap_with_full']:.4f}")
    if args.save_uncertainty and previous is None:
        np.savez(args.save_uncertainty, **{n: r["uncertainty"] for n, r in runs.items()})
    write_json(args.json, {"dataset": args.dataset, "seed": args.seed, "split_seed": args.split_seed,
                           "full_epochs": args.epochs, "lr": args.lr, "k": args.k,
                           "init_gain": UncertaintyConfig(**gain).init_gain, "threads": args.threads,
                           "device": str(device),
                           "compare_npz": args.compare_npz, "overlap_with_compared_full": compared,
                           "full_runs": args.full_runs, "overlap_of_saved_targets_with_full": saved_targets,
                           "num_candidates": int(len(cand)), "random_overlap": args.k,
                           "overlap_full_vs_full": same, "overlap_with_full": own,
                           "overlap_with_other_full": other, "shortcuts": shortcuts,
                           "seconds_full_schedule": seconds,
                           "seconds_per_epoch": seconds["A"] / args.epochs})


if __name__ == "__main__":
    main()
