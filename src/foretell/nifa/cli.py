"""`foretell nifa ...` commands: ``run`` (attack + victims + baselines -> table/JSON), ``attack``
(attack once, save the poisoned graph) and ``merge`` (combine reports run on disjoint seeds).

Cheap to import: torch / PyG are imported inside the command functions. Every flag is checked
(ranges by the argparse types, combinations by :func:`_check_args`) before any data is read or any
file is written.
"""

from __future__ import annotations

import argparse

from foretell.core.argtypes import MAX_SEED, float_in, int_at_least, int_in, seed_int, threads_int

DATASETS = ("dblp", "german", "pokec_z", "pokec_n")
MAX_MASKS = 1000    # DropConnect masks T: the paper uses 20; the masks' memory grows as T x features x hidden


def _seed_list(text: str) -> tuple:
    """argparse type of ``--seeds``: distinct comma-separated seeds, each in 0 .. 2**32 - 1."""
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            seeds.append(seed_int(part))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (accepted: comma-separated integers in [0, {MAX_SEED}], "
                                             f"e.g. 0,1,2)") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} lists no seeds (accepted: e.g. 0,1,2)")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names a seed twice; list each seed once")
    return tuple(seeds)


def _seeds(args) -> tuple:
    return args.seeds if args.seeds is not None else (args.seed if args.seed is not None else 0,)


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
    g.add_argument("--drop-columns", default=None,
                   help="comma-separated CSV columns not to use as features (fairgnn / pygdebias formats)")
    g.add_argument("--split-seed", type=seed_int, default=0,
                   help="seed of the fixed 50/25/25 split of labelled nodes (default: 0)")


def _add_attack_args(p) -> None:
    g = p.add_argument_group("attack (defaults: the paper's settings for the preset)")
    g.add_argument("--num-injected", type=int_at_least(2), default=None,
                   help="injected nodes b, 2 .. the number of labelled nodes (default: 1%% of labelled nodes)")
    g.add_argument("--injection-rate", type=float_in(0, 1, low_open=True, high_open=True), default=None,
                   help="b as a fraction of labelled nodes, in (0, 1) (instead of --num-injected)")
    g.add_argument("--edges-per-injected", type=int_at_least(1), default=None,
                   help="edges d of each injected node (at most the targets of a sensitive group)")
    g.add_argument("--k", type=float_in(0, 1, low_open=True), default=None,
                   help="fraction of most-uncertain labelled nodes per group, in (0, 1] (0.5)")
    g.add_argument("--alpha", type=float_in(0), default=None,
                   help="weight of the injected-feature gap L_CF (>= 0)")
    g.add_argument("--beta", type=float_in(0), default=None,
                   help="weight of the fairness gaps L_SP + L_EO (>= 0)")
    g.add_argument("--max-iter", type=int_at_least(0), default=None, help="rounds of surrogate/feature optimisation")
    g.add_argument("--max-step", type=int_at_least(1), default=None, help="steps of each phase per round (50)")
    g.add_argument("--uncertainty-epochs", type=int_at_least(1), default=None,
                   help="Bayesian-GCN epochs (default 150; paper: 500, see docs/nifa.md)")
    g.add_argument("--uncertainty-lr", type=float_in(0, low_open=True), default=None,
                   help="Bayesian-GCN Adam learning rate, > 0 (default 3e-3; paper: 1e-3)")
    g.add_argument("--uncertainty-check-every", type=int_at_least(0), default=None,
                   help="stop the Bayesian GCN once the targets stop changing (check every N epochs; 0 = off)")
    g.add_argument("--uncertainty-init-gain", type=float_in(0, low_open=True), default=None,
                   help="Xavier gain of the Bayesian GCN's weights (default sqrt(2) = calculate_gain('relu'), "
                        "as in the official code; 1.0 = this package before 2026-11-26)")
    g.add_argument("--num-masks", type=int_in(2, MAX_MASKS), default=None,
                   help=f"DropConnect masks T, 2 .. {MAX_MASKS} (20)")
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
                   help="FairGNN encoder (default gcn; the NIFA paper used gat); needs fairgnn in --victims")
    g.add_argument("--defense", type=float_in(0, 1, high_open=True), default=None, metavar="ETA",
                   help="drop the ETA fraction, in [0, 1), of most-uncertain training nodes before each victim trains")


def _add_common(p) -> None:
    from foretell.core.device import add_device_argument

    add_device_argument(p)
    p.add_argument("--seed", type=seed_int, default=None, help=f"random seed, 0 .. {MAX_SEED} (default: 0)")
    p.add_argument("--seeds", type=_seed_list, default=None,
                   help="comma-separated distinct seeds, e.g. 0,1,2,3,4 (instead of --seed)")
    p.add_argument("--quick", action="store_true", help="short schedules for a smoke test (not for results)")
    p.add_argument("--threads", type=threads_int(1), default=1, help="torch CPU threads (default: 1)")
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
OWN_FILE_FLAGS = (("name", "--name"), ("label_column", "--label-column"),
                  ("sensitive_column", "--sensitive-column"), ("drop_columns", "--drop-columns"))


def _dataset_name(args) -> str:
    return args.name if args.format is not None else (args.dataset or "dblp")


def _drop_columns(args) -> tuple:
    return tuple(c.strip() for c in (args.drop_columns or "").split(",") if c.strip())


def _check_args(args) -> None:
    """Contradicting or ignored flag combinations: a one-line error before any data is read."""
    from foretell.core.errors import ForetellError

    if args.seed is not None and args.seeds is not None:
        raise ForetellError(f"--seed {args.seed} and --seeds {','.join(map(str, args.seeds))} conflict; "
                            "give one seed with --seed or several with --seeds")
    if args.num_injected is not None and args.injection_rate is not None:
        raise ForetellError(f"--num-injected {args.num_injected} and --injection-rate {args.injection_rate} conflict: "
                            "both set the number of injected nodes; give one (a count, or a fraction of the "
                            "labelled nodes)")
    if args.format is not None:
        if args.dataset is not None:
            raise ForetellError(f"--dataset {args.dataset} and --format {args.format} conflict: --dataset loads a "
                                "preset, --format reads your own files (with --data-dir, --name, --label-column, "
                                "--sensitive-column); give one")
        if args.shared_dir is not None:
            raise ForetellError("--shared-dir is not used with --format (your files are read from --data-dir); "
                                "leave it out")
        missing = [f for f, v in (("--data-dir", args.data_dir), ("--name", args.name),
                                  ("--label-column", args.label_column),
                                  ("--sensitive-column", args.sensitive_column)) if v is None]
        if missing:
            raise ForetellError(f"--format {args.format} needs {', '.join(missing)}")
        if args.label_column == args.sensitive_column:
            raise ForetellError(f"--label-column and --sensitive-column are both {args.label_column!r}; the label "
                                "and the sensitive attribute must be two different columns")
        if args.format == "dblp" and args.drop_columns is not None:
            raise ForetellError("--drop-columns does not apply to --format dblp (its features come from "
                                "<name>_csr_emb.npz, not from CSV columns); leave it out")
    else:
        ignored = [flag for attr, flag in OWN_FILE_FLAGS if getattr(args, attr) is not None]
        if ignored:
            raise ForetellError(f"{', '.join(ignored)} describe{'s' if len(ignored) == 1 else ''} your own files "
                                f"and need{'s' if len(ignored) == 1 else ''} --format (fairgnn, pygdebias or "
                                f"dblp); the preset --dataset {args.dataset or 'dblp'} has its own files and columns")
        if args.data_dir is not None and args.shared_dir is not None:
            raise ForetellError("--data-dir and --shared-dir conflict: --data-dir is the preset's own folder, "
                                "--shared-dir the shared folder holding data/graphs/<dataset>; give one")
    victims = getattr(args, "victims", None)
    if getattr(args, "fairgnn_encoder", None) is not None and "fairgnn" not in [
            v.strip().lower() for v in victims.split(",")]:
        raise ForetellError(f"--fairgnn-encoder {args.fairgnn_encoder} only applies to the fairgnn victim, which "
                            f"--victims {victims} does not list; add fairgnn or leave the flag out")


def _load(args):
    from foretell.nifa.loaders import load_graph, load_preset
    from foretell.nifa.splits import add_split

    if args.format is not None:
        data = load_graph(args.format, args.data_dir, args.name, args.label_column, args.sensitive_column,
                          drop_columns=_drop_columns(args))
    else:
        data = load_preset(_dataset_name(args), args.data_dir, args.shared_dir)
    return add_split(data, args.split_seed)


def _nifa_config(args, dataset: str):
    """The attack's config from the flags, validated (one-line error before any data is read)."""
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
    if args.injection_rate is not None:
        over["num_injected"] = None
    cfg = NIFAConfig.preset(dataset, device=args.device, **over)
    cfg.validate()
    return cfg


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


def _baselines(text: str) -> tuple:
    from foretell.core.errors import ForetellError
    from foretell.nifa.evaluate import BASELINES

    if text.strip().lower() == "none":
        return ()
    names = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BASELINES]
    if bad or not names:
        raise ForetellError(f"unknown baseline(s) {bad or [text]} in --baselines; accepted: "
                            f"{', '.join(BASELINES)} (comma-separated), or none")
    if len(set(names)) != len(names):
        raise ForetellError(f"--baselines {text} names one twice; list each baseline once")
    return tuple(names)


def _check_run_data(data, victims, baselines) -> None:
    """What the victims and baselines need of the data, checked before the attack (which may save a
    poisoned graph) instead of after it."""
    import numpy as np

    from foretell.core.errors import ForetellError

    y, s = data.y.cpu().numpy(), data.sens.cpu().numpy()
    fair = [v for v in victims if v in ("fairgnn", "fairvgnn")]
    if fair and y.max() > 1:
        raise ForetellError(f"victim(s) {', '.join(fair)} need binary labels; this data set has {int(y.max()) + 1} "
                            f"classes (leave {', '.join(fair)} out of --victims)")
    if fair and not (data.train_mask.cpu().numpy() & (s >= 0)).any():
        raise ForetellError(f"victim(s) {', '.join(fair)} need training nodes with a known sensitive value; "
                            "this split has none")
    if "fagnn" in baselines and not (((y == 1) & (s == 1)).any() and ((y == 0) & (s == 0)).any()):
        raise ForetellError("the fagnn baseline needs labelled nodes with (label 1, sensitive 1) and (label 0, "
                            "sensitive 0); this data set lacks one (leave fagnn out of --baselines)")
    if "fairsin" in victims:
        ei = data.edge_index.cpu().numpy()
        across = (s[ei[0]] >= 0) & (s[ei[1]] >= 0) & (s[ei[0]] != s[ei[1]])
        if len(np.unique(ei[0][across])) < 2:
            raise ForetellError("victim fairsin needs edges between the two sensitive groups; this graph has "
                                "(almost) none (leave fairsin out of --victims)")


def _cmd_run(args) -> int:
    import dataclasses

    _check_args(args)
    _setup(args)
    from foretell.core.errors import ForetellError
    from foretell.nifa.evaluate import EvalConfig, evaluate
    from foretell.nifa.fair_victims import FairConfig
    from foretell.nifa.table import print_report
    from foretell.nifa.victims import VictimConfig, check_victims

    seeds = _seeds(args)
    victims = tuple(check_victims(args.victims))
    baselines = _baselines(args.baselines)
    if args.min_epochs is not None and args.max_epochs is not None and args.min_epochs > args.max_epochs:
        raise ForetellError(f"--min-epochs {args.min_epochs} is above --max-epochs {args.max_epochs}; "
                            "the early stop can only start before the last epoch")
    vcfg = VictimConfig(max_epochs=120, min_epochs=30, patience=20) if args.quick else VictimConfig()
    vcfg = dataclasses.replace(vcfg, **{k: getattr(args, k) for k in ("max_epochs", "min_epochs", "patience")
                                        if getattr(args, k) is not None})  # validated (before loading data)
    if args.min_epochs is None and vcfg.min_epochs > vcfg.max_epochs:  # e.g. --quick's 30 with --max-epochs 20
        vcfg = dataclasses.replace(vcfg, min_epochs=vcfg.max_epochs)
    name = _dataset_name(args)
    nifa = _nifa_config(args, name)
    fair = FairConfig(**({"fairgnn_encoder": args.fairgnn_encoder} if args.fairgnn_encoder else {}))
    if args.quick:
        fair.estimator_epochs = 20
    data = _load(args)
    nifa.check_data(data)          # the budget and the edges per injected node fit this graph
    _check_run_data(data, victims, baselines)
    cfg = EvalConfig(seeds=seeds, victims=victims, baselines=baselines, nifa=nifa,
                     victim=vcfg, fair=fair, defense=args.defense, device=args.device)
    report = evaluate(name, data, cfg, json_path=args.json, save_poisoned=args.save_poisoned,
                      log=lambda m: print(m, flush=True))
    print_report(report)
    if args.json:
        print(f"report written to {args.json}")
    return 0


def _cmd_attack(args) -> int:
    import dataclasses

    _check_args(args)
    _setup(args)
    from foretell.core.errors import ForetellError
    from foretell.core.report import write_json
    from foretell.nifa.attack import NIFA

    seeds = _seeds(args)
    if len(seeds) != 1:
        raise ForetellError(f"nifa attack writes one poisoned graph, so it takes one seed; got --seeds "
                            f"{','.join(map(str, seeds))} (use `foretell nifa run --seeds ...` to evaluate several)")
    name = _dataset_name(args)
    cfg = dataclasses.replace(_nifa_config(args, name), seed=seeds[0])
    data = _load(args)
    cfg.check_data(data)
    poisoned = NIFA(cfg).attack(data)
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
            with open(path, encoding="utf-8") as fh:
                reports.append(json.load(fh))
        except OSError as exc:
            raise ForetellError(f"cannot read report {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ForetellError(f"cannot read report {path}: not UTF-8 text (byte {exc.start}); expected the JSON "
                                "report of `foretell nifa run --json`") from None
        except json.JSONDecodeError as exc:
            raise ForetellError(f"cannot read report {path}: malformed JSON ({exc}); expected the JSON report of "
                                "`foretell nifa run --json`") from None
        except RecursionError:
            raise ForetellError(f"cannot read report {path}: JSON nested too deeply; expected the JSON report of "
                                "`foretell nifa run --json`") from None
    merged = merge_reports(reports, names=list(args.reports))
    write_json(args.json, merged)
    print_report(merged)
    return 0
