"""`foretell specprune ...` commands."""

from __future__ import annotations

from pathlib import Path

from foretell.core.argtypes import int_at_least, seed_int, threads_int
from foretell.core.device import add_device_argument


def register(sub) -> None:
    p = sub.add_parser("specprune", help="SpecPrune-VLA: action-aware visual-token pruning for VLA models", description="SpecPrune-VLA: action-aware visual-token pruning for VLA models.")
    p.set_defaults(_parser=p)
    actions = p.add_subparsers(dest="specprune_command", metavar="ACTION")
    e = actions.add_parser("eval", help="closed-loop success rate and latency of the pruning methods on the tabletop testbed",
                           description="Run closed-loop episodes of the shipped OFT-style VLA on the simulated tabletop "
                                       "for each method (same layouts for all) and write success rate, LLM/e2e latency, "
                                       "visual tokens kept and LLM MACs fraction as JSON.")
    e.add_argument("--episodes", type=int_at_least(1), default=100, help="episodes per method (default: 100)")
    e.add_argument("--seed", type=seed_int, default=0, help="layout seed; changes the episode layouts (default: 0)")
    e.add_argument("--json", default="reports/specprune/eval.json", help="output JSON path (default: reports/specprune/eval.json)")
    e.add_argument("--md", default=None, help="also write a Markdown table here (default: next to --json)")
    e.add_argument("--methods", default=None, help="comma-separated subset of full,specprune,specprune_no_global,"
                   "specprune_no_controller,fastv,vla_cache,random (default: all of these) and the opt-in fastv_layer0 "
                   "(FastV pruned after layer 0, about SpecPrune's MACs at the same budget)")
    e.add_argument("--quick", action="store_true", help="smoke run: at most 2 episodes of at most 30 steps")
    e.add_argument("--weights", default=None, help="weights directory (default: the shipped 96 px policy src/foretell/specprune/assets/vla_96px; the 64 px one is assets/vla)")
    e.add_argument("--threads", type=threads_int(1), default=1, help="torch CPU threads (default: 1)")
    e.add_argument("--specprune-config", default=None, metavar="NAME|JSON",
                   help="operating point of the specprune variants: a name (paper, tight; see docs/specprune.md) "
                        "or SpecPruneConfig changes as a JSON object, e.g. '{\"token_budget\": 80}' (default: paper)")
    e.add_argument("--no-baselines", action="store_true", help="skip the blind / random-action / expert reference policies")
    e.add_argument("--cuda-graphs", action="store_true",
                   help="every method replays its runs of plain decoder layers from CUDA graphs (needs --device cuda)")
    add_device_argument(e)
    e.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    from foretell.core.report import check_distinct_outputs, markdown_table
    from foretell.specprune.eval import EvalConfig, evaluate, parse_methods, results_rows, write_report

    json_path = Path(args.json)
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    check_distinct_outputs({"--json": json_path, "--md" if args.md else "the Markdown table (--json's name "
                            "ending in .md)": md_path})
    cfg = EvalConfig(episodes=args.episodes, seed=args.seed, methods=parse_methods(args.methods), quick=args.quick,
                     weights=args.weights, threads=args.threads, baselines=not args.no_baselines,
                     specprune=args.specprune_config, device=args.device, cuda_graphs=args.cuda_graphs)
    report = evaluate(cfg)
    write_report(report, json_path, md_path)
    headers, rows = results_rows(report)
    print(markdown_table(headers, rows, digits=3))
    print(f"wrote {json_path} and {md_path}")
    return 0
