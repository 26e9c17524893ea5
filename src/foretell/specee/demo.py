"""`foretell demo` part for SpecEE: a few held-out prompts, full vs specee vs speculative vs merged."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, *, seed: int, quick: bool, shared: str | None, device=None) -> list[dict]:
    """Short end-to-end SpecEE run on the embedded SmolLM2 with the shipped assets on ``device``
    (default cpu); writes specee_demo.json / .md / .png under ``out_dir`` and returns summary rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from foretell.core.report import write_figure, write_json, write_markdown_table
    from foretell.specee.bench import run_bench
    from foretell.specee.loading import read_prompts

    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    prompts = read_prompts(None, "eval")[: 1 if quick else 3]
    report = run_bench(prompts, 12 if quick else 24, seed=seed, ppl_texts=0, extras=False,
                       methods_filter=["specee", "speculative", "specee+speculative"], device=device)
    where = report["config"]["device"].upper() if report["config"]["device"] == "cpu" else report["config"]["device"]
    write_json(out_dir / "specee_demo.json", report)
    rows, summary = [], []
    for name, m in report["methods"].items():
        rows.append([name, m["tokens_per_s"], m["speedup"], m["avg_layers"], m["agreement"], m["first_divergence"]])
        summary.append({"system": "specee", "method": name, "speedup": m["speedup"],
                        "quality": f"agreement {m['agreement']:.3f} with full greedy, {m['avg_layers']:.1f} layers/pass",
                        "fairness": None,
                        "note": f"oracle {report['oracle_avg_layers']:.1f}/{report['config']['num_layers']} layers; "
                                f"{'shared CPU' if where == 'CPU' else where}, {report['prompts']} prompts x "
                                f"{report['new_tokens']} tokens"})
    write_markdown_table(out_dir / "specee_demo.md", f"SpecEE demo (SmolLM2-135M, {where})",
                         ["method", "tokens/s", "speedup", "avg layers", "agreement", "first divergence"], rows)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    n = report["config"]["num_layers"]
    xs = list(range(1, n + 1))
    hist = report["histograms"]
    ax.bar([x - 0.2 for x in xs], hist["oracle_layers"], width=0.4, label="oracle (earliest correct layer)")
    ax.bar([x + 0.2 for x in xs], hist["specee_layers"], width=0.4, label="SpecEE exit layer")
    ax.set_xlabel("layers used for the token")
    ax.set_ylabel("tokens")
    ax.legend()
    ax.set_title("SpecEE exits vs the oracle, SmolLM2-135M")
    write_figure(out_dir / "specee_exit_layers.png", fig)
    plt.close(fig)
    return summary
