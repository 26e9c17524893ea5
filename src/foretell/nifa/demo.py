"""`foretell demo` part for NIFA: German, one seed, NIFA vs random injection on GCN and SGC."""

from __future__ import annotations

import time
from pathlib import Path


def run_demo(out_dir: Path, *, seed: int, quick: bool, shared: str | None) -> list[dict]:
    """Attack German (PyGDebias files in the shared folder), retrain GCN and SGC on the clean, NIFA
    and random-injection graphs; write nifa_demo.json / .md / .png under ``out_dir``."""
    import warnings

    import torch

    from foretell.core.report import write_figure, write_json, write_text
    from foretell.nifa.attack import NIFAConfig
    from foretell.nifa.evaluate import EvalConfig, evaluate
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.plots import fairness_figure
    from foretell.nifa.splits import add_split
    from foretell.nifa.table import markdown
    from foretell.nifa.victims import VictimConfig

    warnings.filterwarnings("ignore", message="Sparse")
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data = add_split(load_preset("german", shared=shared), 0)
    nifa = NIFAConfig.preset("german", uncertainty_epochs=10 if quick else 100,
                             max_iter=2 if quick else 10, max_step=10 if quick else 50)
    victim = VictimConfig(max_epochs=120, min_epochs=30, patience=20) if quick else VictimConfig()
    cfg = EvalConfig(seeds=(seed,), victims=("gcn", "sgc"), baselines=("random",), nifa=nifa, victim=victim)
    report = evaluate("german", data, cfg, log=lambda m: None)
    report["demo_seconds"] = time.perf_counter() - t0
    report["quick"] = quick
    write_json(out_dir / "nifa_demo.json", report)
    write_text(out_dir / "nifa_demo.md", f"# NIFA demo (German, seed {seed})\n\n{markdown(report)}\n")
    write_figure(out_dir / "nifa_demo.png", fairness_figure(report))
    rows = []
    for v, res in report["victims"].items():
        c, a = res["clean"], res["attacked"]
        r = report["baselines"]["random"][v]["attacked"]
        rows.append({"system": "nifa", "method": f"NIFA vs {v} (German)", "speedup": None,
                     "quality": f"acc {c['acc']:.1f} -> {a['acc']:.1f}",
                     "fairness": f"dSP {c['sp']:.2f} -> {a['sp']:.2f} (random {r['sp']:.2f}); "
                                 f"dEO {c['eo']:.2f} -> {a['eo']:.2f}",
                     "note": f"{report['num_injected']} nodes x {report['edges_per_injected']} edges, "
                             f"attack {report['attack_seconds']:.0f} s"})
    return rows
