"""GPU check of nifa (see benchmarks/gpu/run_all.py): DBLP, seed 0, the paper's DBLP attack settings.

Steps, each recorded with its own result or error (a failed step does not stop the next one):

1. ``attack_device``: NIFA on the device, PyG style (``attack(data.to(device))``); seconds per stage,
   where the poisoned graph lives, peak GPU memory.
2. ``victims``: gcn, sage, appnp, sgc, fairgnn, fairvgnn trained on the clean and on the device-attacked
   graph on the device (seed 0), metrics and seconds each.
3. ``attack_cpu``: the same attack on the CPU of the same machine (torch's default threads); the
   overlap of the selected targets with step 1 and whether the injected edges are equal.
4. ``cli``: ``foretell nifa run --device ... --quick`` on DBLP with gcn + fairsin and both baselines
   (covers the flag, EvalConfig.device, the baselines and FairSIN on the device).
5. ``defense``: ``evaluate(..., EvalConfig(device=..., defense=0.1))`` with gcn and both baselines on a
   2,000-author DBLP subgraph of known gender (on the whole DBLP the defense stops with "needs the
   uncertainty of every training node" on any device: training authors of unknown gender get none).

``attack_plus_4_victims_s`` = step 1 + gcn/sage/appnp/sgc clean and attacked from step 2 (the issue's
CPU target for that is 180 s). If step 1 fails, step 3 runs first and step 2 uses its graph (moved
to the device). Steps 3-5 are skipped once ``BUDGET_S`` has passed. ``ok`` needs every
step without error, the poisoned graph on the device, attacked accuracy > 0.5 for every victim and
a target overlap with the CPU run of at least 0.9 (same initial weights and masks on both devices;
only float rounding differs).

``FORETELL_NIFA_CHECK_NODES=N`` runs on a breadth-first DBLP subgraph of N labelled authors instead
(a quick smoke test of this script with ``--device cpu``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback

import numpy as np
import torch

import common

BUDGET_S = 120.0
VICTIMS = ("gcn", "sage", "appnp", "sgc", "fairgnn", "fairvgnn")
PLAIN = ("gcn", "sage", "appnp", "sgc")


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _step(res: dict, name: str, fn) -> None:
    """Run ``fn()`` (a dict) into ``res[name]``, recording its seconds or its error."""
    t0 = time.perf_counter()
    try:
        res[name] = fn()
    except Exception as exc:  # recorded; the next step still runs
        res[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    res[name]["step_seconds"] = time.perf_counter() - t0


def _attack(data, dev: str) -> tuple[dict, object]:
    from foretell.nifa.attack import NIFA, NIFAConfig

    _sync(dev)
    t0 = time.perf_counter()
    pg = NIFA(NIFAConfig.preset("dblp", seed=0)).attack(data)
    _sync(dev)
    out = {"seconds": time.perf_counter() - t0, "stages": pg.info["seconds"],
           "poisoned_on": str(pg.data.x.device), "num_injected": pg.num_injected,
           "edges_added": pg.info["num_edges_added"], "last_round": pg.info["feature_history"][-1]}
    return out, pg


def _overlap(a: dict, b: dict) -> dict:
    per = {g: len(np.intersect1d(a[g], b[g])) / max(1, len(a[g])) for g in (0, 1)}
    return {"group0": per[0], "group1": per[1], "min": min(per.values())}


def _injected(pg) -> tuple[np.ndarray, np.ndarray]:
    ei = pg.data.edge_index.cpu().numpy()
    n_real = pg.data.num_nodes - pg.num_injected
    x = pg.data.x.to_dense() if pg.data.x.layout != torch.strided else pg.data.x
    return ei[:, (ei[0] >= n_real) | (ei[1] >= n_real)], x[n_real:].cpu().numpy()


def _victims(clean, attacked, dev: str) -> dict:
    from foretell.nifa.victims import train_victim

    out = {}
    for name in VICTIMS:
        out[name] = {}
        for tag, d in (("clean", clean), ("attacked", attacked)):
            try:
                _sync(dev)
                t0 = time.perf_counter()
                m = train_victim(name, d, 0)
                _sync(dev)
                out[name][tag] = {**{k: v for k, v in m.items() if isinstance(v, (int, float))},
                                  "seconds": time.perf_counter() - t0}
            except Exception as exc:  # recorded per victim and graph
                out[name][tag] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return out


def _cli(args, dev: str, nodes: str | None) -> dict:
    from foretell.cli import main

    if nodes:
        return {"skipped": "FORETELL_NIFA_CHECK_NODES set (the CLI runs the whole data set)"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        argv = ["nifa", "run", "--dataset", "dblp", "--device", dev, "--quick", "--victims", "gcn,fairsin",
                "--baselines", "random,fagnn", "--max-epochs", "40", "--json", path]
        if args.nifa_data:
            argv[4:4] = ["--data-dir", args.nifa_data]
        os.environ["FORETELL_DEBUG"] = "1"           # a failure raises, so its traceback is recorded
        threads = torch.get_num_threads()            # the command sets its own (--threads 1)
        try:
            rc = main(argv)
        finally:
            os.environ.pop("FORETELL_DEBUG", None)
            torch.set_num_threads(threads)
        rep = json.loads(open(path).read())
    return {"rc": rc, "config_device": rep["config"]["device"], "nifa_device": rep["config"]["nifa"]["device"],
            "victims": {v: {g: rep["victims"][v][g]["acc"] for g in ("clean", "attacked")} for v in rep["victims"]},
            "seconds_total": rep["seconds_total"]}


def _defense(data, dev: str) -> dict:
    from foretell.nifa.attack import NIFAConfig
    from foretell.nifa.evaluate import EvalConfig, evaluate
    from foretell.nifa.splits import labelled_subgraph
    from foretell.nifa.victims import VictimConfig

    sub = labelled_subgraph(data, 2000, seed=0)
    cfg = EvalConfig(victims=("gcn",), baselines=("random", "fagnn"), defense=0.1, device=dev,
                     nifa=NIFAConfig(num_injected=20, edges_per_injected=10, uncertainty_epochs=30, max_iter=2,
                                     max_step=20),
                     victim=VictimConfig(max_epochs=100, min_epochs=20, patience=10))
    rep = evaluate("dblp-subgraph", sub, cfg, log=lambda m: None)
    return {"config_device": rep["config"]["device"], "seconds_total": rep["seconds_total"],
            "gcn": {g: rep["per_seed"][0]["runs"]["gcn"][g]["acc"] for g in ("clean", "nifa", "random", "fagnn")}}


def run(args) -> dict:
    from foretell.nifa.graph import data_to
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split, labelled_subgraph

    dev = common.DEV
    t_start = time.perf_counter()
    nodes = os.environ.get("FORETELL_NIFA_CHECK_NODES")
    data = add_split(load_preset("dblp", data_dir=args.nifa_data), 0)
    if nodes:
        data = labelled_subgraph(data, int(nodes), seed=0)
    res = {"device": dev, "num_nodes": int(data.num_nodes), "torch_threads": torch.get_num_threads(),
           "load_seconds": time.perf_counter() - t_start}
    t0 = time.perf_counter()
    a = torch.eye(4).to_sparse_csr().to(dev)      # CUDA context + cuSPARSE/cuBLAS handles, outside the timings
    (torch.sparse.mm(a, torch.ones(4, 2, device=dev)) @ torch.ones(2, 2, device=dev)).sum().item()
    res["warmup_seconds"] = time.perf_counter() - t0
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    state = {}

    def attack_device():
        out, state["pg_dev"] = _attack(data_to(data, dev), dev)
        if dev.startswith("cuda"):
            out["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        return out

    def attack_cpu():
        if dev == "cpu":
            return {"skipped": "device is the CPU (step 1 is the CPU run)"}
        out, state["pg_cpu"] = _attack(data, "cpu")
        pg = state.get("pg_dev")
        if pg is not None:
            pg_cpu = state["pg_cpu"]
            out["target_overlap"] = _overlap(pg.targets, pg_cpu.targets)
            (e_dev, x_dev), (e_cpu, x_cpu) = _injected(pg), _injected(pg_cpu)
            out["injected_edges_equal"] = bool(e_dev.shape == e_cpu.shape and (e_dev == e_cpu).all())
            out["injected_features_equal_fraction"] = float((x_dev == x_cpu).mean())
            out["speedup_device_vs_cpu"] = out["seconds"] / res["attack_device"]["seconds"]
        return out

    def victims():
        pg = state.get("pg_dev") or state.get("pg_cpu")
        if pg is None:
            return {"skipped": "no attacked graph (both attacks failed)"}
        out = _victims(data_to(data, dev), data_to(pg.data, dev), dev)
        out["attacked_graph_from"] = "device" if "pg_dev" in state else "cpu (the device attack failed)"
        return out

    def cli():
        return _cli(args, dev, nodes)

    def defense():
        return _defense(data, dev)

    _step(res, "attack_device", attack_device)
    # without a device-attacked graph the victims use the CPU-attacked one, so the CPU attack goes first
    order = [attack_cpu, victims, cli, defense] if "pg_dev" not in state else [victims, attack_cpu, cli, defense]
    for fn in order:
        if fn is not victims and time.perf_counter() - t_start > BUDGET_S:
            res[fn.__name__] = {"skipped": f"time budget of {BUDGET_S:.0f} s spent"}
            continue
        _step(res, fn.__name__, fn)
    try:
        vic = res["victims"]
        res["attack_plus_4_victims_s"] = res["attack_device"]["seconds"] + sum(
            vic[v][g]["seconds"] for v in PLAIN for g in ("clean", "attacked"))
        res["cpu_target_s"] = 180.0
    except (KeyError, TypeError):
        pass

    errors = [k for k in ("attack_device", "victims", "attack_cpu", "cli", "defense")
              if isinstance(res.get(k), dict) and "error" in res[k]]
    errors += [f"victims.{v}.{g}" for v, r in res.get("victims", {}).items() if isinstance(r, dict)
               for g, m in r.items() if isinstance(m, dict) and "error" in m]
    res["errors"] = errors
    runs = [r for r in res.get("victims", {}).values() if isinstance(r, dict)]
    poisoned_on = res.get("attack_device", {}).get("poisoned_on", "")
    overlap = res.get("attack_cpu", {}).get("target_overlap", {}).get("min", 1.0)
    checks = {"no_errors": not errors,
              "poisoned_on_device": poisoned_on.split(":")[0] == dev.split(":")[0],
              "attacked_acc_above_0.5": all(r.get("attacked", {}).get("acc", 0) > 0.5 for r in runs),
              "target_overlap_at_least_0.9": overlap >= 0.9,
              "victims_ran": any("attacked" in r for r in runs)}
    res["checks"] = checks
    res["target_overlap_measured"] = "target_overlap" in res.get("attack_cpu", {})
    res["ok"] = all(checks.values())
    return res
