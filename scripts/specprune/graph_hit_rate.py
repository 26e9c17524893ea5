#!/usr/bin/env python
"""How often a closed loop would replay SpecPrune's CUDA graphs, by ``kept_multiple`` and ``min_hits``.

A captured graph is keyed by the rows it sees. After the static stage these are fixed by the mode
and the number of visual tokens kept. In a closed loop that number changes from query to query, so
a graph pays only for counts that come back. ``kept_multiple`` rounds the count up to make them
come back.

This runs SpecPrune (testbed operating point, no rounding) closed loop on SCREENING layouts and
records each query's mode and kept count, in order. It then replays that sequence through the
cache rule of ``LayerGraphs``, with no eviction. A query replays when its key was seen at least
``min_hits`` times before; it captures on exactly the ``min_hits``-th sight (that query also
replays); otherwise it runs eagerly. The key is (mode, count rounded up to ``kept_multiple``),
capped at the visual rows there were.

The simulation is needed because the testbed backbone has 6 layers: in coarse mode it has no run of
two plain layers, so real graphs would see only fine-mode queries there. On OFT's 32 layers, every
query after the static stage runs through graphs keyed this way.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/specprune/graph_hit_rate.py --seed 7 --episodes 20 \\
        --json benchmarks/results/specprune_graph_hit_rate_seed7.json
"""

from __future__ import annotations

import time
from collections import Counter


def simulate(keys: list, min_hits: int) -> dict:
    """Shares of queries that replay / capture / run eagerly under the ``LayerGraphs`` cache rule."""
    seen, c = Counter(), Counter()
    for key in keys:
        seen[key] += 1
        c["replay" if seen[key] > min_hits else "capture" if seen[key] == min_hits else "eager"] += 1
    n = len(keys)
    return {"replay_share": c["replay"] / n, "capture_share": c["capture"] / n, "eager_share": c["eager"] / n,
            "graphs_captured": c["capture"], "distinct_keys": len(seen)}


def main(argv=None) -> int:
    from foretell.core.argtypes import int_list
    from foretell.specprune.eval import screening_parser

    p = screening_parser(__doc__, 20)
    p.add_argument("--min-hits", type=int_list(1), default="1,2,3", help="comma-separated LayerGraphs min_hits values")
    p.add_argument("--kept-multiples", type=int_list(1), default="1,8,16,32", help="comma-separated kept_multiple values")
    args = p.parse_args(argv)

    from foretell.core.report import write_json
    from foretell.specprune.eval import run_layouts, screening_setup, testbed_specprune_config
    from foretell.specprune.methods import build_method

    vla, runner, layouts = screening_setup(args.weights, args.seed, args.episodes)
    t0 = time.perf_counter()
    h = build_method("specprune", vla, config=testbed_specprune_config().replace(kept_multiple=1))
    h.remove()
    stats = run_layouts(runner, layouts, h, "specprune")[1]
    queries = [(r.mode, r.visual_kept, r.visual_per_layer[1]) for r in h.records]
    report = {"seed": args.seed, "episodes": args.episodes, "weights": args.weights, "queries": len(queries),
              "success_rate": stats["success_rate"], "visual_tokens_kept_mean": stats["visual_tokens_kept"],
              "distinct_counts": len({q[:2] for q in queries}), "by_setting": {}}
    for m in args.kept_multiples:
        keys = [(mode, min(-(-kept // m) * m, rows)) for mode, kept, rows in queries]
        added = sum(k[1] for k in keys) / len(keys) - stats["visual_tokens_kept"]
        for hits in args.min_hits:
            row = simulate(keys, hits) | {"kept_multiple": m, "min_hits": hits, "tokens_added_mean": added}
            report["by_setting"][f"kept_multiple={m},min_hits={hits}"] = row
            print(row, flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    from foretell.core.errors import run_script

    raise SystemExit(run_script(main))
