"""Seeds x victims on the clean graph, the NIFA-poisoned graph and the baseline-poisoned graphs.

For every seed: NIFA attacks the clean graph (config seed = run seed), the baselines poison it at
their budgets, and each victim is trained (same seed) on each graph; metrics are on the test nodes
of the fixed split. The report follows the issue's JSON schema and keeps every per-seed run under
``runs`` so partial reports (e.g. seeds run in separate processes) can be merged.
Everything runs on ``EvalConfig.device`` (default: where ``data`` is); the report's ``config.device``
says which.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from foretell.core.errors import ForetellError
from foretell.nifa.attack import NIFA, NIFAConfig
from foretell.nifa.baselines import fagnn_injection, random_injection
from foretell.nifa.fair_victims import FairConfig
from foretell.nifa.metrics import summarise
from foretell.nifa.victims import VictimConfig, check_victims, train_victim

BASELINES = ("random", "fagnn")


@dataclass
class EvalConfig:
    """What to run: seeds, victims, baselines, and the attack / victim / defense settings."""

    seeds: tuple = (0,)
    victims: tuple = ("gcn", "sage", "appnp", "sgc")
    baselines: tuple = BASELINES
    nifa: NIFAConfig = field(default_factory=NIFAConfig)
    victim: VictimConfig = field(default_factory=VictimConfig)
    fair: FairConfig = field(default_factory=FairConfig)
    defense: float | None = None
    fagnn_rate: float = 0.05
    device: str | None = None      # None: where the data is; else the data is moved there first


def _undirected_edges(data) -> int:
    ei = data.edge_index
    return int((ei[0] < ei[1]).sum())


def _train(name, graph, seed, cfg: EvalConfig):
    if name in ("fairgnn", "fairvgnn"):
        from foretell.nifa.fair_victims import train_fair

        return train_fair(name, graph, seed, cfg.victim, cfg.fair)
    return train_victim(name, graph, seed, cfg.victim)


def _defended(graph, cfg: EvalConfig, seed: int):
    if cfg.defense is None:
        return graph
    from foretell.nifa.defense import apply_defense

    train = np.flatnonzero(graph.train_mask.cpu().numpy())   # authors of unknown gender train too
    unc = NIFA(dataclasses.replace(cfg.nifa, seed=seed)).uncertainty(graph, nodes=train)["uncertainty"]
    return apply_defense(graph, cfg.defense, unc)


def run_seed(data, seed: int, cfg: EvalConfig, *, save_poisoned=None, log=print, on_victim=None) -> dict:
    """All runs of one seed: {"seed", "attack_seconds", "runs": {victim: {graph: metrics}}, ...}.

    ``on_victim(partial)`` is called after each victim with the seed's result so far."""
    from foretell.core.seed import seed_everything

    seed_everything(seed)
    t0 = time.perf_counter()
    poisoned = NIFA(dataclasses.replace(cfg.nifa, seed=seed)).attack(data)
    attack_seconds = time.perf_counter() - t0
    log(f"seed {seed}: NIFA attack {attack_seconds:.1f} s ({poisoned.num_injected} nodes, "
        f"{poisoned.info['num_edges_added']} edges)")
    if save_poisoned:
        poisoned.save(save_poisoned)
        log(f"seed {seed}: poisoned graph saved to {save_poisoned}")
    graphs = {"clean": data, "nifa": poisoned.data}
    extra = {}
    if "random" in cfg.baselines:
        graphs["random"], _ = random_injection(data, poisoned.num_injected, cfg.nifa.edges_per_injected, seed)
    if "fagnn" in cfg.baselines:
        graphs["fagnn"], extra["fagnn_edges_added"] = fagnn_injection(data, seed, cfg.fagnn_rate)
    graphs = {k: _defended(g, cfg, seed) for k, g in graphs.items()}
    runs = {}
    result = {"seed": seed, "attack_seconds": attack_seconds, "attack_info": {
        "seconds": poisoned.info["seconds"], "uncertainty_epochs_run": poisoned.info["uncertainty_epochs_run"],
        "num_edges_added": poisoned.info["num_edges_added"],
        "feature_history": poisoned.info["feature_history"]}, "num_injected": poisoned.num_injected, **extra,
        "runs": runs}
    for victim in cfg.victims:
        runs[victim] = {}
        for gname, graph in graphs.items():
            t = time.perf_counter()
            r = _train(victim, graph, seed, cfg)
            r["seconds"] = time.perf_counter() - t
            runs[victim][gname] = r
            log(f"seed {seed}: {victim:8s} {gname:6s} acc {100 * r['acc']:.2f} sp {100 * r['sp']:.2f} "
                f"eo {100 * r['eo']:.2f} ({r['seconds']:.0f} s, {r['epochs']} epochs)")
        if on_victim is not None:
            on_victim(result)
    return result


def build_report(dataset: str, data, cfg: EvalConfig, seed_results: list[dict]) -> dict:
    """The issue's JSON schema (metrics x100, mean and population std over seeds) + raw runs."""
    if not seed_results:
        raise ForetellError("no seed finished; nothing to report")
    victims = [v for v in cfg.victims if all(v in s["runs"] for s in seed_results)]
    report = {
        "dataset": dataset, "num_nodes": int(data.num_nodes), "num_edges": _undirected_edges(data),
        "num_injected": int(seed_results[0]["num_injected"]),
        "edges_per_injected": int(cfg.nifa.edges_per_injected),
        "seeds": [int(s["seed"]) for s in seed_results],
        "attack_seconds": float(np.mean([s["attack_seconds"] for s in seed_results])),
        "victims": {}, "baselines": {b: {} for b in cfg.baselines},
    }
    for v in victims:
        per = lambda g: [s["runs"][v][g] for s in seed_results]  # noqa: E731
        report["victims"][v] = {"clean": summarise(per("clean")), "attacked": summarise(per("nifa"))}
        for b in cfg.baselines:
            report["baselines"][b][v] = {"attacked": summarise(per(b))}
    report["attack_seconds_per_seed"] = [s["attack_seconds"] for s in seed_results]
    report["metric_note"] = ("x100 on test nodes; sp and eo as in NIFA's code (eo = mean over classes of "
                             "the per-class TPR gaps, i.e. mean of TPR and TNR gaps); eo_tpr = standard TPR gap")
    report["split"] = {"seed": int(getattr(data, "split_seed", 0)), "train": int(data.train_mask.sum()),
                       "val": int(data.val_mask.sum()), "test": int(data.test_mask.sum())}
    report["config"] = {"nifa": dataclasses.asdict(cfg.nifa), "victim": dataclasses.asdict(cfg.victim),
                        "fair": dataclasses.asdict(cfg.fair), "defense": cfg.defense,
                        "fagnn_rate": cfg.fagnn_rate, "victims": list(cfg.victims),
                        "baselines": list(cfg.baselines), "device": _device_name(data, cfg)}
    report["per_seed"] = seed_results
    return report


def evaluate(dataset: str, data, cfg: EvalConfig, *, json_path=None, save_poisoned=None, log=print) -> dict:
    """Run every seed (writing the partial report after each one when ``json_path`` is given)."""
    from foretell.core.report import write_json

    cfg.victims = tuple(check_victims(list(cfg.victims)))
    bad = [b for b in cfg.baselines if b not in BASELINES]
    if bad:
        raise ForetellError(f"unknown baseline(s) {bad}; accepted: {', '.join(BASELINES)}")
    from foretell.nifa.graph import data_to

    data = data_to(data, data_device(data, cfg))     # a moved shallow copy: the caller's data stays put
    results, t0 = [], time.perf_counter()

    def write(partial=None):
        done = results + ([partial] if partial is not None else [])
        rep = build_report(dataset, data, cfg, done)
        rep["seconds_total"] = time.perf_counter() - t0
        rep["complete"] = partial is None and len(results) == len(cfg.seeds)
        if json_path:
            write_json(json_path, rep)
        return rep

    for i, seed in enumerate(cfg.seeds):
        results.append(run_seed(data, seed, cfg, save_poisoned=save_poisoned if i == 0 else None, log=log,
                                on_victim=(lambda part: write(part)) if json_path else None))
        report = write()
    return report


def data_device(data, cfg: EvalConfig):
    """The device the runs use: ``cfg.device`` (checked to exist), else the device of ``data.x``."""
    if cfg.device is None:
        return data.x.device
    from foretell.core.device import resolve_device

    return resolve_device(cfg.device)


def _device_name(data, cfg: EvalConfig):
    """``config.device`` of the report: the asked device, else the data's (None for a merged report
    whose parts did not record one)."""
    if cfg.device is not None:
        return str(cfg.device)
    x = getattr(data, "x", None)
    return None if x is None else str(x.device)


MERGE_KEYS = ("dataset", "num_nodes", "num_edges", "split", "config", "per_seed")
SAME_KEYS = ("dataset", "num_nodes", "num_edges", "num_injected", "edges_per_injected", "split", "config")


RUN_ONLY = ("seeds", "seed", "device", "threads")  # may differ between the runs of one setup


def _comparable(report: dict, key: str):
    """``report[key]`` with the defaults of fields an older version did not record filled in, and
    without the fields that legitimately differ between runs on other seeds or devices."""
    value = report.get(key)
    if key != "config" or not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k not in RUN_ONLY}
    for name, cls in (("nifa", NIFAConfig), ("victim", VictimConfig), ("fair", FairConfig)):
        if isinstance(out.get(name), dict):
            try:
                full = dataclasses.asdict(cls(**out[name]))
            except (TypeError, ForetellError):
                full = dict(out[name])
            out[name] = {k: v for k, v in full.items() if k not in RUN_ONLY}
    return out


def _first_difference(a, b, path: str) -> str:
    """Dotted path of the first value that differs between two JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    return f"{path} ({a!r} vs {b!r})"


def merge_reports(reports: list[dict]) -> dict:
    """Combine reports of the same data set and config run on disjoint seeds into one."""
    if not reports:
        raise ForetellError("nothing to merge")
    bad = [i for i, r in enumerate(reports) if not isinstance(r, dict) or not all(k in r for k in MERGE_KEYS)]
    if bad:
        raise ForetellError(f"report(s) {bad} (0-based) are not `foretell nifa run` JSON reports: each needs the keys "
                            f"{', '.join(MERGE_KEYS)}")
    first = reports[0]
    for i, r in enumerate(reports[1:], 1):
        differ = [_first_difference(_comparable(first, k), _comparable(r, k), k)
                  for k in SAME_KEYS if _comparable(r, k) != _comparable(first, k)]
        if differ:
            raise ForetellError(f"report {i} differs from report 0 in {'; '.join(differ)}; only reports of the "
                                "same data set, graph, split and config (on different seeds) can be merged")
    incomplete = [i for i, r in enumerate(reports) if r.get("complete") is False]
    if incomplete:
        raise ForetellError(f"report(s) {incomplete} (0-based) are marked incomplete (an interrupted run); "
                            "rerun those seeds before merging")
    per_seed = sorted((s for r in reports for s in r["per_seed"]), key=lambda s: s["seed"])
    seeds = [s["seed"] for s in per_seed]
    if len(set(seeds)) != len(seeds):
        raise ForetellError(f"reports to merge share seeds: {seeds}")
    c = first["config"]
    cfg = EvalConfig(seeds=tuple(seeds), victims=tuple(c["victims"]), baselines=tuple(c["baselines"]),
                     nifa=NIFAConfig(**c["nifa"]), victim=VictimConfig(**c["victim"]), fair=FairConfig(**c["fair"]),
                     defense=c["defense"], fagnn_rate=c["fagnn_rate"])
    cfg.device = c.get("device")

    out = build_report(first["dataset"], _ShapeData(first), cfg, per_seed)
    out["seconds_total"] = sum(r.get("seconds_total", 0.0) for r in reports)
    return out


class _ShapeData:
    """Stand-in for ``data`` in :func:`merge_reports` (only sizes and the split are read)."""

    def __init__(self, report):
        import torch

        self.num_nodes = report["num_nodes"]
        self.split_seed = report["split"]["seed"]
        e = report["num_edges"]
        self.edge_index = torch.stack([torch.zeros(e, dtype=torch.long), torch.ones(e, dtype=torch.long)])
        sp = report["split"]
        self.train_mask = torch.ones(sp["train"], dtype=torch.bool)
        self.val_mask = torch.ones(sp["val"], dtype=torch.bool)
        self.test_mask = torch.ones(sp["test"], dtype=torch.bool)
