"""GPU check of nifa: see benchmarks/gpu/run_all.py."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import common


def run(args) -> dict:
    from foretell.nifa.attack import NIFA, NIFAConfig
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.victims import train_victim

    res = {}
    data = load_preset("dblp", data_dir=args.nifa_data)
    data = add_split(data, 0)
    t0 = time.perf_counter()
    pg = NIFA(NIFAConfig(seed=0)).attack(data)
    res["attack_cpu_s"] = time.perf_counter() - t0
    for name in ("gcn", "sgc"):
        for tag, d in (("clean", data), ("attacked", pg.data)):
            dc = d.to(common.DEV)
            common.sync()
            t1 = time.perf_counter()
            m = train_victim(name, dc, 0)
            common.sync()
            res[f"{name}_{tag}"] = {k: v for k, v in m.items() if isinstance(v, (int, float))}
            res[f"{name}_{tag}"]["seconds_on_device"] = time.perf_counter() - t1
    res["ok"] = all(res[f"{n}_attacked"]["acc"] > 0.5 for n in ("gcn", "sgc"))
    return res
