"""GPU check of specprune: see benchmarks/gpu/run_all.py."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import common


def run(args) -> dict:
    from foretell.specprune.eval import EpisodeRunner, testbed_specprune_config
    from foretell.specprune.methods import build_method
    from foretell.specprune.sim import sample_layout
    from foretell.specprune.train import load_policy

    res = {}
    vla, tok = load_policy()
    vla = vla.to(common.DEV).eval()
    runner = EpisodeRunner(vla, tok, vla.config.image_size, 100)
    per = {}
    for name in ("full", "specprune", "fastv"):
        h = None if name == "full" else build_method(name, vla, seed=0, config=testbed_specprune_config() if name == "specprune" else None,
                                                     token_budget=None if name == "specprune" else 115)
        wins, secs = 0, []
        for ep in range(args.episodes):
            out = runner.run(sample_layout(0, ep), h)
            wins += int(out["success"])
            secs.extend(out.get("e2e_seconds", []))
        if h is not None:
            h.remove()
        per[name] = {"successes": wins, "episodes": args.episodes,
                     "median_query_ms": 1000 * statistics.median(secs) if secs else None}
    res["methods"] = per
    res["ok"] = per["full"]["successes"] > 0
    return res
