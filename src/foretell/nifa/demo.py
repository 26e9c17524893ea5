"""`foretell demo` part for NIFA: a real DBLP subgraph, one seed, NIFA vs random injection on GCN and SGC.

The subgraph (breadth-first over the labelled authors with known gender: 400 nodes quick, 1000
otherwise) keeps the demo short on a CPU; the injection budget is scaled up to 5% of its nodes
with 10 edges each; the Bayesian GCN runs the shortened schedule of the effect runs (lr 0.01 x 20
epochs). Full-size DBLP and German results are in docs/nifa.md.
"""

from __future__ import annotations

import time
from pathlib import Path


def run_demo(out_dir: Path, *, seed: int, quick: bool, shared: str | None, device: str = "cpu") -> list[dict]:
    """Attack a DBLP subgraph, retrain GCN and SGC on the clean, NIFA and random-injection graphs on
    ``device``; write nifa_demo.json / .md / .png under ``out_dir``."""
    import warnings

    import torch

    from foretell.core.report import write_figure, write_json, write_text
    from foretell.nifa.attack import NIFAConfig
    from foretell.nifa.evaluate import EvalConfig, evaluate
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.plots import fairness_figure
    from foretell.nifa.splits import labelled_subgraph
    from foretell.nifa.table import markdown
    from foretell.nifa.victims import VictimConfig

    warnings.filterwarnings("ignore", message="Sparse")
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data = labelled_subgraph(load_preset("dblp", shared=shared), 400 if quick else 1000, seed=0)
    nifa = NIFAConfig(num_injected=max(2, data.num_nodes // 20), edges_per_injected=10,
                      uncertainty_epochs=20, uncertainty_lr=0.01, max_iter=2 if quick else 5,
                      max_step=20 if quick else 50, alpha=0.1, beta=8.0)
    victim = VictimConfig(max_epochs=100, min_epochs=40, patience=20) if quick else VictimConfig()
    cfg = EvalConfig(seeds=(seed,), victims=("gcn", "sgc"), baselines=("random",), nifa=nifa, victim=victim,
                     device=device)
    report = evaluate(f"dblp-subgraph-{data.num_nodes}", data, cfg, log=lambda m: None)
    report["demo_seconds"] = time.perf_counter() - t0
    report["quick"] = quick
    write_json(out_dir / "nifa_demo.json", report)
    write_text(out_dir / "nifa_demo.md", f"# NIFA demo (DBLP subgraph of {data.num_nodes} labelled authors, seed {seed})\n\n{markdown(report)}\n")
    write_figure(out_dir / "nifa_demo.png", fairness_figure(report))
    rows = []
    for v, res in report["victims"].items():
        c, a = res["clean"], res["attacked"]
        r = report["baselines"]["random"][v]["attacked"]
        rows.append({"system": "nifa", "method": f"NIFA vs {v} (DBLP subgraph)", "speedup": None,
                     "quality": f"acc {c['acc']:.1f} -> {a['acc']:.1f}",
                     "fairness": f"dSP {c['sp']:.2f} -> {a['sp']:.2f} (random {r['sp']:.2f}); "
                                 f"dEO {c['eo']:.2f} -> {a['eo']:.2f}",
                     "note": f"{report['num_injected']} nodes x {report['edges_per_injected']} edges, "
                             f"attack {report['attack_seconds']:.0f} s"})
    return rows
