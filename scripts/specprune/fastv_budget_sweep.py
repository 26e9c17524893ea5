#!/usr/bin/env python
"""How few visual tokens FastV needs on the testbed: success of FastV at several budgets and pruning layers K.

Runs closed-loop episodes on SCREENING layouts (a seed other than 0) with ``FastVPolicy(budget, K)``
for every (K, budget) pair and writes success counts, per-episode successes and the LLM MACs
fraction. The registry's ``fastv`` uses K = 2; K = 0 is FastV's K = 2 of a 32-layer backbone scaled
to this 6-layer one (the rule the SpecPrune layer sets follow).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/specprune/fastv_budget_sweep.py \\
        --weights src/foretell/specprune/assets/vla_96px --seed 7 --episodes 30 \\
        --budgets 10,20,40,60 --layers 0,2 --json benchmarks/results/specprune_fastv_sweep_seed7.json
"""

from __future__ import annotations

import time


def main(argv=None) -> int:
    from foretell.core.argtypes import int_list
    from foretell.specprune.eval import screening_parser

    p = screening_parser(__doc__, 30)
    p.add_argument("--budgets", type=int_list(1), default="10,20,40,60", help="comma-separated visual-token budgets")
    p.add_argument("--layers", type=int_list(0), default="0,2", help="comma-separated FastV pruning layers K")
    args = p.parse_args(argv)

    from foretell.core.report import write_json
    from foretell.specprune import adapter_for
    from foretell.specprune.eval import run_layouts, screening_setup
    from foretell.specprune.handle import PruningHandle
    from foretell.specprune.methods import build_method
    from foretell.specprune.peers import FastVPolicy

    vla, runner, layouts = screening_setup(args.weights, args.seed, args.episodes)
    t0 = time.perf_counter()

    def run(handle, desc):
        handle.remove()
        summary = run_layouts(runner, layouts, handle, desc)[1]
        return {k: summary[k] for k in ("successes", "success_rate", "llm_macs_fraction", "per_episode_success")}

    report = {"seed": args.seed, "episodes": args.episodes, "weights": args.weights,
              "full": run(build_method("full", vla), "full"), "fastv": []}
    for k in args.layers:
        for b in args.budgets:
            row = {"layer": k, "budget": b} | run(PruningHandle(adapter_for(vla), FastVPolicy(b, k), "fastv"), f"fastv K={k} b={b}")
            report["fastv"].append(row)
            print(f"fastv K={k} budget={b}: {row['successes']}/{args.episodes} (macs {row['llm_macs_fraction']:.3f}); "
                  f"full {report['full']['successes']}/{args.episodes}", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    from foretell.core.errors import run_script

    raise SystemExit(run_script(main))
