"""Why does NIFA's effect on DBLP vary so much between seeds? A cheap decomposition (GCN + SGC victims).

Input: the poisoned graphs of the 5-seed run, one ``foretell nifa run --dataset dblp --seeds S
--save-poisoned DIR/dblp_sS.pt`` per seed S (split fixed, split seed 0; the run seed S sets the
Bayesian GCN's init and masks, the injected edges and the feature start). Parts:

1. ``grid``: GCN and SGC trained with victim seeds 0..4 on the clean graph and on each seed's poisoned
   graph: test acc, SP (x100) and the *signed* gap ``sp_signed`` = P(yhat=1|s=1) - P(yhat=1|s=0) x100.
   The diagonal (attack seed = victim seed) is what the 5-seed table averages. ``decomposition``: the
   std over attack seeds of the per-graph means (victim seed averaged out) against the std over
   victim seeds within one graph (victim initialisation only).
2. ``factors`` (victim seed 0): (a) seed 0's targets kept, injected edges and features from seed s;
   (b) seed s's targets, edges and features from seed 0. Compares the spread over s of (a) and (b)
   with the spread of the full attacks: does the variance come from the targets (Bayesian GCN) or
   from the injection/feature step?
3. ``directional`` (``--directional-seeds``): the opt-in, non-paper ``directional_gaps`` feature loss
   (gaps widened on the training-label gap's side) with each seed's own targets, injection and feature
   seed, GCN/SGC with victim seed = attack seed: compare with the grid's diagonal.
4. ``targets``: pairwise overlap of the seeds' target sets, and each seed's surrogate gap after the
   last feature round (``train_sp_signed``, from the attack's history).

    python benchmarks/nifa_seed_variance.py --poisoned-dir reports/nifa [--seeds 0,1,2,3,4] [--threads 1]
Writes benchmarks/results/nifa_dblp_seed_variance.json (rewritten after each part).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from foretell.core.argtypes import threads_int

VICTIMS = ("gcn", "sgc")


def _metrics(r: dict) -> dict:
    return {"acc": 100 * r["acc"], "sp": 100 * r["sp"], "sp_signed": 100 * r["sp_signed"], "eo": 100 * r["eo"]}


def _decompose(grid: dict, seeds: list, vs: list, victim: str, key: str) -> dict:
    """Spread of ``key`` over attack seeds (graph means over the victim seeds ``vs``) vs over victim seeds."""
    m = np.array([[grid[f"nifa_s{a}"][victim][str(v)][key] for v in vs] for a in seeds])
    clean = np.array([grid["clean"][victim][str(v)][key] for v in vs])
    diag = [grid[f"nifa_s{a}"][victim][str(a)][key] for a in seeds]
    clean_diag = [grid["clean"][victim][str(a)][key] for a in seeds]
    return {"attack_seed_std_of_graph_means": float(m.mean(1).std()),
            "victim_seed_std_within_graph_mean": float(m.std(1).mean()),
            "victim_seed_std_clean": float(clean.std()),
            "diagonal_mean": float(np.mean(diag)), "diagonal_std": float(np.std(diag)),
            "diagonal": [float(v) for v in diag], "clean_diagonal": [float(v) for v in clean_diag],
            "graph_means": [float(x) for x in m.mean(1)], "clean_mean": float(clean.mean())}


def main() -> None:
    from foretell.core.paths import repo_root
    from foretell.core.report import write_json
    from foretell.nifa.attack import NIFA, NIFAConfig, PoisonedGraph
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.victims import VictimConfig, train_victim

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--poisoned-dir", default=str(repo_root() / "reports/nifa"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=threads_int(1), default=1)
    ap.add_argument("--skip-factors", action="store_true")
    ap.add_argument("--factor-seeds", default=None,
                    help="attack seeds of part 2 (default: all but the first; seeds without a saved graph get "
                         "only the targets-fixed attack)")
    ap.add_argument("--victim-seeds", default=None, help="victim seeds of the grid (default: --seeds)")
    ap.add_argument("--directional-seeds", default="", help="seeds for part 3 (default: none)")
    ap.add_argument("--skip-clean", action="store_true", help="no clean-graph victims in the grid")
    ap.add_argument("--quick", action="store_true", help="smoke test: 5 victim epochs, 1 feature round of 2 steps")
    ap.add_argument("--json", default=str(repo_root() / "benchmarks/results/nifa_dblp_seed_variance.json"))
    from foretell.core.device import add_device_argument, parse_args_with_device

    add_device_argument(ap)
    args, device = parse_args_with_device(ap)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    vseeds = [int(s) for s in (args.seeds if args.victim_seeds is None else args.victim_seeds).split(",") if s]
    fseeds = [int(s) for s in args.factor_seeds.split(",")] if args.factor_seeds else seeds[1:]
    dseeds = [int(s) for s in args.directional_seeds.split(",") if s]
    vcfg = VictimConfig(max_epochs=5, min_epochs=0) if args.quick else None
    quick_attack = dict(max_iter=1, max_step=2) if args.quick else {}
    t_start, cpu0 = time.perf_counter(), time.process_time()
    data = add_split(load_preset("dblp"), 0).to(device)
    pois = {s: PoisonedGraph.load(Path(args.poisoned_dir) / f"dblp_s{s}.pt") for s in seeds}
    for pg in pois.values():
        pg.data = pg.data.to(device)
    report = {"dataset": "dblp", "quick": args.quick, "split_seed": 0, "seeds": seeds, "victims": list(VICTIMS),
              "poisoned_dir": args.poisoned_dir, "threads": args.threads, "device": str(device),
              "load_average_at_start": list(os.getloadavg()),
              "attack_config": pois[seeds[0]].info["config"],
              "note": "metrics x100 on the test nodes; sp_signed = P(yhat=1|s=1) - P(yhat=1|s=0)"}

    def save():
        report["seconds"] = time.perf_counter() - t_start
        report["cpu_seconds"] = time.process_time() - cpu0
        report["load_average_at_end"] = list(os.getloadavg())
        report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_json(args.json, report)

    # part 3 first (free): targets and surrogate gaps
    def ov(a, b):
        return sum(len(np.intersect1d(a[g], b[g])) for g in (0, 1)) / sum(len(b[g]) for g in (0, 1))
    report["targets"] = {
        "pairwise_overlap": {f"{a}-{b}": ov(pois[a].targets, pois[b].targets) for a in seeds for b in seeds if a < b},
        "surrogate_train_sp_signed_last_round": {str(s): 100 * pois[s].info["feature_history"][-1]["train_sp_signed"]
                                                 for s in seeds},
        "surrogate_train_sp_signed_per_round": {str(s): [100 * h["train_sp_signed"] for h in pois[s].info["feature_history"]]
                                                for s in seeds}}
    print("targets:", report["targets"]["pairwise_overlap"], flush=True)

    # part 1: attack seed x victim seed grid
    graphs = {**({} if args.skip_clean else {"clean": data}), **{f"nifa_s{s}": pois[s].data for s in seeds}}
    grid = report["grid"] = {}
    for gname, g in graphs.items():
        grid[gname] = {}
        for victim in VICTIMS:
            grid[gname][victim] = {}
            own = seeds if gname == "clean" else [int(gname[6:])]     # the 5-seed table's pairs
            for v in sorted(set(vseeds) | set(own)):
                grid[gname][victim][str(v)] = _metrics(train_victim(victim, g, v, vcfg))
            vals = grid[gname][victim]
            print(f"{gname:8s} {victim}: sp_signed " + " ".join(f"{v}:{vals[str(v)]['sp_signed']:+6.2f}" for v in sorted(map(int, vals))),
                  flush=True)
        save()
    if "clean" in grid and vseeds:
        report["decomposition"] = {v: {k: _decompose(grid, seeds, vseeds, v, k) for k in ("sp", "sp_signed", "acc")}
                                   for v in VICTIMS}
    save()

    # part 2: which attack factor carries the spread (victim seed 0)
    if not args.skip_factors:
        fac = report["factors"] = {"targets_fixed_seed0": {}, "injection_features_fixed_seed0": {},
                                   "full_attack": {}}
        base = seeds[0]
        for s in [base, *fseeds]:
            if s in pois:        # the full attack of seed s (only where its poisoned graph was given)
                fac["full_attack"][str(s)] = {v: grid[f"nifa_s{s}"][v][str(base)] for v in VICTIMS}
            if s == base:
                fac["targets_fixed_seed0"][str(s)] = fac["injection_features_fixed_seed0"][str(s)] = \
                    fac["full_attack"][str(s)]
                continue
            kinds = [("targets_fixed_seed0", s, pois[base].targets)]
            if s in pois:
                kinds.append(("injection_features_fixed_seed0", base, pois[s].targets))
            for name, cfg_seed, targets in kinds:
                g = NIFA(NIFAConfig.preset("dblp", seed=cfg_seed, **quick_attack)).attack(data, targets=targets).data
                fac[name][str(s)] = {v: _metrics(train_victim(v, g, base, vcfg)) for v in VICTIMS}
                print(f"{name} s={s}: " + ", ".join(f"{v} sp_signed {fac[name][str(s)][v]['sp_signed']:+.2f}"
                                                    for v in VICTIMS), flush=True)
            save()
        fac["spread"] = {name: {v: {k: float(np.std([r[v][k] for r in fac[name].values()]))
                                    for k in ("sp", "sp_signed")} for v in VICTIMS}
                         for name in ("full_attack", "targets_fixed_seed0", "injection_features_fixed_seed0")
                         if len(fac[name]) > 1}
        print("spread:", fac["spread"], flush=True)
    save()
    if dseeds:
        dirn = report["directional"] = {}
        for s in dseeds:
            g = NIFA(NIFAConfig.preset("dblp", seed=s, directional_gaps=True, **quick_attack)).attack(
                data, targets=pois[s].targets)
            dirn[str(s)] = {v: _metrics(train_victim(v, g.data, s, vcfg)) for v in VICTIMS}
            dirn[str(s)]["surrogate_train_sp_signed_per_round"] = [100 * h["train_sp_signed"]
                                                                   for h in g.info["feature_history"]]
            print(f"directional s={s}: " + ", ".join(f"{v} sp {dirn[str(s)][v]['sp']:.2f} sp_signed "
                                                    f"{dirn[str(s)][v]['sp_signed']:+.2f}" for v in VICTIMS), flush=True)
            save()
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
