"""FairSIN victim on DBLP, clean vs saved NIFA-poisoned graphs (one victim seed per graph).

    python benchmarks/nifa_fairsin_check.py reports/nifa/dblp_s0.pt [...] [--threads 1]
Writes benchmarks/results/nifa_dblp_fairsin.json (rewritten after each training): test acc, SP, EO
(as coded), EO (TPR gap), signed SP gap (x100) and the seconds of each training.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

from foretell.core.argtypes import threads_int


def main() -> None:
    from foretell.core.paths import repo_root
    from foretell.core.report import write_json
    from foretell.nifa.attack import PoisonedGraph
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.victims import train_victim

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("graphs", nargs="+", help="poisoned graphs saved by foretell nifa run/attack")
    ap.add_argument("--threads", type=threads_int(1), default=1)
    ap.add_argument("--json", default=str(repo_root() / "benchmarks/results/nifa_dblp_fairsin.json"))
    from foretell.core.device import add_device_argument, parse_args_with_device

    add_device_argument(ap)
    args, device = parse_args_with_device(ap)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    data = add_split(load_preset("dblp"), 0).to(device)
    report = {"dataset": "dblp", "victim": "fairsin", "threads": args.threads, "device": str(device),
              "load_average_at_start": list(os.getloadavg()), "runs": {}}
    for path in args.graphs:
        pg = PoisonedGraph.load(path)
        pg.data = pg.data.to(device)
        seed = int(pg.info["config"]["seed"])
        for name, graph in ((f"clean_victim_seed{seed}", data), (f"nifa_seed{seed}", pg.data)):
            t0, c0 = time.perf_counter(), time.process_time()
            r = train_victim("fairsin", graph, seed)
            report["runs"][name] = {**{k: 100 * r[k] for k in ("acc", "sp", "eo", "eo_tpr", "sp_signed")},
                                    "epochs": r["epochs"], "seconds": time.perf_counter() - t0,
                                    "cpu_seconds": time.process_time() - c0}
            print(name, report["runs"][name], flush=True)
            report["load_average_at_end"] = list(os.getloadavg())
            write_json(args.json, report)


if __name__ == "__main__":
    main()
