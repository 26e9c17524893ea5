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
    if isinstance(data, _ShapeData):
        return data.num_edges
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

    from foretell.nifa.validate import check_config

    cfg = check_config("evaluate", cfg, EvalConfig)
    cfg.victims = tuple(check_victims(list(cfg.victims)))
    bad = [b for b in cfg.baselines if b not in BASELINES]
    if bad:
        raise ForetellError(f"unknown baseline(s) {bad}; accepted: {', '.join(BASELINES)}")
    check_eval_data(data, cfg)
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


def check_eval_data(data, cfg: EvalConfig) -> None:
    """Everything the runs of ``cfg`` need of their arguments and of ``data`` (the attack's, each
    victim's and each baseline's checks, the seeds and settings), before the first seed's attack."""
    from foretell.nifa.validate import check_config, check_graph, check_number, check_seed
    from foretell.nifa.victims import check_victim_data

    if not isinstance(cfg.seeds, (tuple, list)) or not cfg.seeds:
        raise ForetellError(f"evaluate: seeds is {cfg.seeds!r}; accepted: a non-empty tuple of integer seeds, e.g. (0, 1)")
    for seed in cfg.seeds:
        check_seed("evaluate", seed)
    for who, sub, cls in (("NIFA", cfg.nifa, NIFAConfig), ("victim", cfg.victim, VictimConfig),
                          ("victim", cfg.fair, FairConfig)):
        check_config(f"evaluate ({who} settings)", sub, cls)
    if cfg.defense is not None:
        check_number("evaluate", "defense", cfg.defense, 0.0, 1.0, high_open=True)
    NIFA(cfg.nifa)._check(data, "NIFA.attack")
    for victim in cfg.victims:
        check_victim_data(victim, data)
    if "fagnn" in cfg.baselines:
        check_number("fagnn_injection", "rate", cfg.fagnn_rate, 0.0, low_open=True)
        check_graph(data, "fagnn_injection", binary=True)


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _report_problem(report: dict) -> str | None:
    """What is wrong with the shape of a `foretell nifa run` report (keys present), or None.

    Checks everything :func:`merge_reports` reads, so a malformed file is a clear error, never a
    crash or an empty table."""
    if not isinstance(report["dataset"], str):
        return f"'dataset' is {report['dataset']!r}, expected a name (string)"
    for key in ("num_nodes", "num_edges"):
        if not _is_int(report[key]) or report[key] < 0:
            return f"{key!r} is {report[key]!r}, expected a non-negative integer"
    split = report["split"]
    if not isinstance(split, dict) or not all(_is_int(split.get(k)) and split[k] >= 0
                                              for k in ("seed", "train", "val", "test")):
        return f"'split' is {split!r}, expected {{'seed', 'train', 'val', 'test'}} with non-negative integers"
    c = report["config"]
    if not isinstance(c, dict):
        return f"'config' is {c!r}, expected an object"
    for key in ("victims", "baselines"):
        if not isinstance(c.get(key), list) or not all(isinstance(v, str) for v in c[key]):
            return f"'config.{key}' is {c.get(key)!r}, expected a list of names"
    if not c["victims"]:
        return "'config.victims' is empty, so the report has no results"
    for key, cls in (("nifa", NIFAConfig), ("victim", VictimConfig), ("fair", FairConfig)):
        if not isinstance(c.get(key), dict):
            return f"'config.{key}' is {c.get(key)!r}, expected an object"
        try:
            cls(**c[key])
        except (TypeError, ForetellError) as exc:
            return f"'config.{key}' does not fit {cls.__name__} ({exc})"
    if "defense" not in c or (c["defense"] is not None and not _is_number(c["defense"])):
        return f"'config.defense' is {c['defense']!r}, expected a number or null"
    if not _is_number(c.get("fagnn_rate")):
        return f"'config.fagnn_rate' is {c.get('fagnn_rate')!r}, expected a number"
    per_seed = report["per_seed"]
    if not isinstance(per_seed, list):
        return f"'per_seed' is {per_seed!r}, expected a list of per-seed results"
    if not per_seed:
        return "'per_seed' is empty: the report has no seed's results"
    if not _is_number(report.get("seconds_total", 0.0)):
        return f"'seconds_total' is {report['seconds_total']!r}, expected a number"
    graphs = ("clean", "nifa", *c["baselines"])
    for i, s in enumerate(per_seed):
        where = f"per_seed[{i}]"
        if not isinstance(s, dict):
            return f"{where} is {s!r}, expected an object"
        if not _is_int(s.get("seed")) or s["seed"] < 0:
            return f"{where}.seed is {s.get('seed')!r}, expected a non-negative integer"
        if not _is_number(s.get("attack_seconds")):
            return f"{where}.attack_seconds is {s.get('attack_seconds')!r}, expected a number"
        if not _is_int(s.get("num_injected")):
            return f"{where}.num_injected is {s.get('num_injected')!r}, expected an integer"
        runs = s.get("runs")
        if not isinstance(runs, dict):
            return f"{where}.runs is {runs!r}, expected {{victim: {{graph: metrics}}}}"
        for v in c["victims"]:
            if not isinstance(runs.get(v), dict):
                return (f"{where}.runs has no results of victim {v!r} (config.victims lists "
                        f"{', '.join(c['victims'])}): the run is incomplete or the file was edited")
            for g in graphs:
                m = runs[v].get(g)
                if not isinstance(m, dict):
                    return f"{where}.runs.{v} has no results on graph {g!r} (expected {', '.join(graphs)})"
                bad = [k for k in ("acc", "sp", "eo", "eo_tpr") if not (m.get(k) is None or _is_number(m.get(k)))
                       or k not in m]
                if bad:
                    return f"{where}.runs.{v}.{g}.{bad[0]} is {m.get(bad[0])!r}, expected a number"
    return None


def merge_reports(reports: list[dict], names: list[str] | None = None) -> dict:
    """Combine reports of the same data set and config run on disjoint seeds into one.

    ``names`` (e.g. the files they came from) name the reports in errors; default: "report I"."""
    if not reports:
        raise ForetellError("nothing to merge")
    names = list(names) if names is not None else [f"report {i}" for i in range(len(reports))]
    bad = [i for i, r in enumerate(reports) if not isinstance(r, dict) or not all(k in r for k in MERGE_KEYS)]
    if bad:
        which = ", ".join(names[i] for i in bad)
        r = reports[bad[0]]
        what = (f"missing {', '.join(k for k in MERGE_KEYS if k not in r)}" if isinstance(r, dict)
                else f"a JSON {type(r).__name__}, not an object")
        detail = what if len(bad) == 1 else f"{names[bad[0]]}: {what}"
        raise ForetellError(f"{which}: not `foretell nifa run` JSON reports ({detail}); each needs "
                            f"the keys {', '.join(MERGE_KEYS)}")
    for i, r in enumerate(reports):
        problem = _report_problem(r)
        if problem:
            raise ForetellError(f"{names[i]} is not a valid `foretell nifa run` JSON report: {problem}")
    first = reports[0]
    for i, r in enumerate(reports[1:], 1):
        differ = [_first_difference(_comparable(first, k), _comparable(r, k), k)
                  for k in SAME_KEYS if _comparable(r, k) != _comparable(first, k)]
        if differ:
            raise ForetellError(f"{names[i]} differs from {names[0]} in {'; '.join(differ)}; only reports of the "
                                "same data set, graph, split and config (on different seeds) can be merged")
    incomplete = [i for i, r in enumerate(reports) if r.get("complete") is False]
    if incomplete:
        raise ForetellError(f"{', '.join(names[i] for i in incomplete)} {'is' if len(incomplete) == 1 else 'are'} "
                            "marked incomplete (an interrupted run); "
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


class _Count:
    """A mask stand-in whose ``sum()`` is a recorded count (nothing of that size is allocated)."""

    def __init__(self, count: int):
        self.count = count

    def sum(self) -> int:
        return self.count


class _ShapeData:
    """Stand-in for ``data`` in :func:`merge_reports` (only sizes and the split are read)."""

    def __init__(self, report):
        self.num_nodes = report["num_nodes"]
        self.num_edges = report["num_edges"]
        self.split_seed = report["split"]["seed"]
        sp = report["split"]
        self.train_mask, self.val_mask, self.test_mask = (_Count(sp[k]) for k in ("train", "val", "test"))
