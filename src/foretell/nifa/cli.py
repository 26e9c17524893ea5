"""`foretell nifa ...` commands: ``run`` (attack + victims + baselines -> table/JSON), ``attack``
(attack once, save the poisoned graph) and ``merge`` (combine reports run on disjoint seeds).

Cheap to import: torch / PyG are imported inside the command functions.
"""

from __future__ import annotations

from foretell.core.argtypes import int_at_least

DATASETS = ("dblp", "german", "pokec_z", "pokec_n")


def _seeds(args) -> tuple:
    from foretell.core.errors import ForetellError

    text = args.seeds if args.seeds is not None else str(args.seed)
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ForetellError(f"--seeds must be comma-separated non-negative integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ForetellError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def _add_data_args(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="preset data set (default: dblp unless --format is given)")
    g.add_argument("--format", choices=("fairgnn", "pygdebias", "dblp"), default=None,
                   help="file format of your own data set in --data-dir (needs --name and the column flags)")
    g.add_argument("--data-dir", default=None, help="directory with the data files (default: the shared data folder)")
    g.add_argument("--shared-dir", default=None, help="shared data folder (default: ../shared beside the repo)")
    g.add_argument("--name", default=None, help="file stem of your data set (<name>.csv, <name>_edges.txt, ...)")
    g.add_argument("--label-column", default=None, help="label column of your CSV (negative = unknown)")
    g.add_argument("--sensitive-column", default=None, help="binary sensitive-attribute column of your CSV")
    g.add_argument("--drop-columns", default="", help="comma-separated CSV columns not to use as features")
    g.add_argument("--split-seed", type=int_at_least(0), default=0,
                   help="seed of the fixed 50/25/25 split of labelled nodes (default: 0)")


def _add_attack_args(p) -> None:
    g = p.add_argument_group("attack (defaults: the paper's settings for the preset)")
    g.add_argument("--num-injected", type=int, default=None, help="injected nodes b (default: 1%% of labelled nodes)")
    g.add_argument("--injection-rate", type=float, default=None, help="b as a fraction of labelled nodes")
    g.add_argument("--edges-per-injected", type=int, default=None, help="edges d of each injected node")
    g.add_argument("--k", type=float, default=None, help="fraction of most-uncertain labelled nodes per group (0.5)")
    g.add_argument("--alpha", type=float, default=None, help="weight of the injected-feature gap L_CF")
    g.add_argument("--beta", type=float, default=None, help="weight of the fairness gaps L_SP + L_EO")
    g.add_argument("--max-iter", type=int, default=None, help="rounds of surrogate/feature optimisation")
    g.add_argument("--max-step", type=int, default=None, help="steps of each phase per round (50)")
    g.add_argument("--uncertainty-epochs", type=int, default=None,
                   help="Bayesian-GCN epochs (default 150; paper: 500, see docs/nifa.md)")
    g.add_argument("--uncertainty-lr", type=float, default=None,
                   help="Bayesian-GCN Adam learning rate (default 3e-3; paper: 1e-3)")
    g.add_argument("--uncertainty-check-every", type=int_at_least(0), default=None,
                   help="stop the Bayesian GCN once the targets stop changing (check every N epochs; 0 = off)")
    g.add_argument("--uncertainty-init-gain", type=float, default=None,
                   help="Xavier gain of the Bayesian GCN's weights (default sqrt(2) = calculate_gain('relu'), "
                        "as in the official code; 1.0 = this package before 2026-11-26)")
    g.add_argument("--num-masks", type=int, default=None, help="DropConnect masks T (20)")
    g.add_argument("--use-all-labels-for-uncertainty", action="store_true",
                   help="train the Bayesian GCN on train+val+test labels like the official code")
    g.add_argument("--directional-gaps", action="store_true",
                   help="NOT in the paper: make the feature step widen the group gaps on the side of the training "
                        "labels' gap (signed squares) instead of in either direction")


def _add_victim_args(p) -> None:
    g = p.add_argument_group("victims")
    g.add_argument("--victims", default="gcn,sage,appnp,sgc",
                   help="comma-separated: gcn,sage,appnp,sgc,fairgnn,fairvgnn,fairsin (default: the four plain ones)")
    g.add_argument("--baselines", default="random,fagnn", help="comma-separated: random,fagnn, or 'none'")
    g.add_argument("--max-epochs", type=int_at_least(1), default=None, help="victim epochs at most (1000)")
    g.add_argument("--min-epochs", type=int_at_least(0), default=None, help="no early stop before this epoch (200)")
    g.add_argument("--patience", type=int_at_least(1), default=None, help="early-stop patience in epochs (50)")
    g.add_argument("--fairgnn-encoder", choices=("gcn", "gat"), default=None,
                   help="FairGNN encoder (default gcn; the NIFA paper used gat)")
    g.add_argument("--defense", type=float, default=None, metavar="ETA",
                   help="drop the ETA fraction of most-uncertain training nodes before each victim trains")


def _add_common(p) -> None:
    from foretell.core.device import add_device_argument

    add_device_argument(p)
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2,3,4 (overrides --seed)")
    p.add_argument("--quick", action="store_true", help="short schedules for a smoke test (not for results)")
    p.add_argument("--threads", type=int_at_least(1), default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--json", default=None, help="write the JSON report here")


def register(sub) -> None:
    p = sub.add_parser("nifa", help="NIFA: node-injection fairness attack on GNNs",
                       description="NIFA: node-injection fairness attack on GNNs.")
    p.set_defaults(_parser=p)
    acts = p.add_subparsers(dest="nifa_command", metavar="ACTION")

    run = acts.add_parser("run", help="attack a graph, retrain victims, print the before/after table",
                          description="Attack a fairness graph with NIFA (and the baselines), train every victim "
                                      "on the clean and poisoned graphs for each seed and report acc / SP / EO x100.")
    _add_data_args(run)
    _add_attack_args(run)
    _add_victim_args(run)
    _add_common(run)
    run.add_argument("--save-poisoned", default=None, metavar="PATH",
                     help="save the first seed's NIFA-poisoned graph (PyG Data, torch.save) to PATH")
    run.set_defaults(func=_cmd_run)

    att = acts.add_parser("attack", help="attack once and save the poisoned graph",
                          description="Run NIFA on a graph and save the poisoned PyG graph for your own models.")
    _add_data_args(att)
    _add_attack_args(att)
    _add_common(att)
    att.add_argument("--save-poisoned", required=True, metavar="PATH", help="where to save the poisoned graph")
    att.set_defaults(func=_cmd_attack)

    mrg = acts.add_parser("merge", help="merge JSON reports run on disjoint seeds",
                          description="Combine `foretell nifa run` reports of the same data set and settings.")
    mrg.add_argument("reports", nargs="+", help="JSON reports to merge")
    mrg.add_argument("--json", required=True, help="write the merged report here")
    mrg.set_defaults(func=_cmd_merge)


QUICK = dict(uncertainty_epochs=10, max_iter=2, max_step=10)


def _load(args):
    from foretell.core.errors import ForetellError
    from foretell.nifa.loaders import load_graph, load_preset
    from foretell.nifa.splits import add_split

    if args.format is not None:
        missing = [f for f, v in (("--data-dir", args.data_dir), ("--name", args.name),
                                  ("--label-column", args.label_column),
                                  ("--sensitive-column", args.sensitive_column)) if v is None]
        if missing:
            raise ForetellError(f"--format {args.format} needs {', '.join(missing)}")
        drop = tuple(c for c in args.drop_columns.split(",") if c)
        data = load_graph(args.format, args.data_dir, args.name, args.label_column, args.sensitive_column,
                          drop_columns=drop)
        name = args.name
    else:
        name = args.dataset or "dblp"
        data = load_preset(name, args.data_dir, args.shared_dir)
    return name, add_split(data, args.split_seed)


def _nifa_config(args, dataset: str):
    from foretell.nifa.attack import NIFAConfig

    over = {k: getattr(args, k) for k in ("num_injected", "injection_rate", "edges_per_injected", "k", "alpha",
                                          "beta", "max_iter", "max_step", "uncertainty_epochs",
                                          "uncertainty_lr", "uncertainty_check_every", "uncertainty_init_gain",
                                          "num_masks")
            if getattr(args, k) is not None}
    if args.use_all_labels_for_uncertainty:
        over["use_all_labels_for_uncertainty"] = True
    if args.directional_gaps:
        over["directional_gaps"] = True
    if args.quick:
        over = {**QUICK, **over}
    if args.injection_rate is not None and args.num_injected is None:
        over["num_injected"] = None
    return NIFAConfig.preset(dataset, device=args.device, **over)


def _setup(args):
    """Warnings, threads, and ``args.device`` checked (one-line error before any data is read) and
    normalised to its string form."""
    import warnings

    import torch

    from foretell.core.device import resolve_device

    args.device = str(resolve_device(args.device))
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.set_num_threads(max(1, args.threads))


def _cmd_run(args) -> int:
    import dataclasses

    _setup(args)
    from foretell.core.errors import ForetellError
    from foretell.nifa.evaluate import EvalConfig, evaluate
    from foretell.nifa.fair_victims import FairConfig
    from foretell.nifa.table import print_report
    from foretell.nifa.victims import VictimConfig, check_victims

    seeds = _seeds(args)
    victims = tuple(check_victims(args.victims))
    baselines = () if args.baselines.strip().lower() == "none" else tuple(
        b.strip() for b in args.baselines.split(",") if b.strip())
    if args.min_epochs is not None and args.max_epochs is not None and args.min_epochs > args.max_epochs:
        raise ForetellError(f"--min-epochs {args.min_epochs} is above --max-epochs {args.max_epochs}; "
                            "the early stop can only start before the last epoch")
    vcfg = VictimConfig(max_epochs=120, min_epochs=30, patience=20) if args.quick else VictimConfig()
    vcfg = dataclasses.replace(vcfg, **{k: getattr(args, k) for k in ("max_epochs", "min_epochs", "patience")
                                        if getattr(args, k) is not None})  # validated (before loading data)
    if args.min_epochs is None and vcfg.min_epochs > vcfg.max_epochs:  # e.g. --quick's 30 with --max-epochs 20
        vcfg = dataclasses.replace(vcfg, min_epochs=vcfg.max_epochs)
    name, data = _load(args)
    fair = FairConfig(**({"fairgnn_encoder": args.fairgnn_encoder} if args.fairgnn_encoder else {}))
    if args.quick:
        fair.estimator_epochs = 20
    cfg = EvalConfig(seeds=seeds, victims=victims, baselines=baselines, nifa=_nifa_config(args, name),
                     victim=vcfg, fair=fair, defense=args.defense, device=args.device)
    report = evaluate(name, data, cfg, json_path=args.json, save_poisoned=args.save_poisoned,
                      log=lambda m: print(m, flush=True))
    print_report(report)
    if args.json:
        print(f"report written to {args.json}")
    return 0


def _cmd_attack(args) -> int:
    _setup(args)
    from foretell.core.errors import ForetellError
    from foretell.core.report import write_json
    from foretell.nifa.attack import NIFA

    seeds = _seeds(args)
    if len(seeds) != 1:
        raise ForetellError(f"nifa attack writes one poisoned graph, so it takes one seed; got --seeds {args.seeds} "
                            "(use `foretell nifa run --seeds ...` to evaluate several)")
    name, data = _load(args)
    import dataclasses

    poisoned = NIFA(dataclasses.replace(_nifa_config(args, name), seed=seeds[0])).attack(data)
    path = poisoned.save(args.save_poisoned)
    info = {"dataset": name, "num_nodes": int(data.num_nodes), "num_injected": poisoned.num_injected,
            "edges_added": poisoned.info["num_edges_added"], "seconds": poisoned.info["seconds"],
            "saved": str(path), "config": poisoned.info["config"], "device": args.device}
    print(f"NIFA on {name}: injected {poisoned.num_injected} nodes with {info['edges_added']} edges in "
          f"{info['seconds']['total']:.1f} s; saved to {path}")
    if args.json:
        write_json(args.json, info)
    return 0


def _cmd_merge(args) -> int:
    import json

    from foretell.core.errors import ForetellError
    from foretell.core.report import write_json
    from foretell.nifa.evaluate import merge_reports
    from foretell.nifa.table import print_report

    reports = []
    for path in args.reports:
        try:
            with open(path) as fh:
                reports.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise ForetellError(f"cannot read report {path}: {exc}") from None
    merged = merge_reports(reports)
    write_json(args.json, merged)
    print_report(merged)
    return 0
