"""``foretell demo`` for SpecDiff: the shipped digits testbeds, a few samples, full vs SpecDiff vs peers."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, *, seed: int = 0, quick: bool = False, shared: str | None = None,
             device: str = "cpu") -> list[dict]:
    """Bench full, SpecDiff and two peers on sd3-digits (and flux-digits unless ``quick``).

    Writes ``bench_<model>.json`` (the bench schema), ``<model>_pareto.png``, ``<model>_samples.png``
    and ``summary.md`` under ``out_dir``; returns one summary row per method and model. ``device``: where
    the models run (as ``foretell specdiff bench --device``).
    """
    from foretell.core.report import markdown_table, write_json, write_text
    from foretell.specdiff.bench import BenchConfig, pareto_plot, run_bench, sample_grid, strip_images

    out_dir = Path(out_dir)
    models = ("sd3-digits",) if quick else ("sd3-digits", "flux-digits")
    methods = ("full", "specdiff", "taylorseer") if quick else ("full", "specdiff", "taylorseer", "ras_like")
    rows, table = [], []
    for name in models:
        cfg = BenchConfig(model=name, steps=10 if quick else 28, samples=4 if quick else 8, methods=methods,
                          seed=seed, repeats=1, premise=False, device=device)
        report = run_bench(cfg)
        report["plot"] = str(pareto_plot(report, out_dir / f"{name}_pareto.png"))
        report["grid"] = str(sample_grid(report, out_dir / f"{name}_samples.png"))
        write_json(out_dir / f"bench_{name}.json", strip_images(report))
        for method, m in report["methods"].items():
            psnr = "identical" if m["psnr"] is None or m["psnr"] == float("inf") else f"{m['psnr']:.1f} dB"
            quality = f"PSNR {psnr}, SSIM {m['ssim']:.3f}, class acc {m['class_acc']:.2f}, FD {m['frechet']:.1f}"
            rows.append({"system": "specdiff", "method": f"{method} ({name})", "speedup": m["speedup"],
                         "quality": quality, "fairness": None,
                         "note": f"MACs x{1 / m['macs_fraction']:.2f} fewer; {cfg.steps} steps, {cfg.samples} samples; "
                                 "shared CPU, timings noisy"})
            table.append([name, method, m["seconds"], m["speedup"], m["macs_fraction"], m["psnr"], m["ssim"],
                          m["class_acc"], m["frechet"]])
        for method, reason in report["skipped"].items():
            rows.append({"system": "specdiff", "method": f"{method} ({name})", "speedup": None, "quality": None,
                         "fairness": None, "note": f"skipped: {reason}"})
    headers = ["model", "method", "seconds", "speedup", "macs_fraction", "psnr", "ssim", "class_acc", "frechet"]
    write_text(out_dir / "summary.md", "# SpecDiff demo\n\n" + markdown_table(headers, table))
    return rows
