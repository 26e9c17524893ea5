"""``foretell demo`` part for SpecPrune-VLA: a few closed-loop tabletop episodes with the shipped
policy for ``full``, ``specprune`` and ``fastv`` (same layouts), a JSON report in the eval schema,
a Markdown table, a bar plot (success, LLM latency, LLM MACs) and a picture of the two camera
views with the visual tokens SpecPrune-VLA kept in one query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_METHODS = ("full", "specprune", "fastv")
DEMO_EPISODES = 8


def _kept_patch_frame(seed: int, horizon: int):
    """Run one specprune episode and return (images, kept patch indices per view, query index)."""
    from foretell.specprune.eval import EpisodeRunner, testbed_specprune_config
    from foretell.specprune.methods import build_method
    from foretell.specprune.sim import sample_layout
    from foretell.specprune.train import INSTRUCTION_LEN, load_policy

    vla, tok = load_policy()
    runner = EpisodeRunner(vla, tok, vla.config.image_size, horizon)
    h = build_method("specprune", vla, seed=seed, config=testbed_specprune_config())
    h.remove()
    layout = sample_layout(seed, 0)
    lay = vla.layout(INSTRUCTION_LEN)
    captured, frames = {}, []
    original_end = h.policy.end

    def end(state):  # record which tokens reached the last layer of this query
        captured["origin"] = state.origin.clone()
        original_end(state)

    h.policy.end = end

    def on_frame(obs, handle):
        kept = {}
        for view, sl in lay.views.items():
            o = captured["origin"]
            kept[view] = (o[(o >= sl.start) & (o < sl.stop)] - sl.start).tolist()
        frames.append((obs["images"], kept, handle.mode))

    runner.run(layout, h, on_frame=on_frame)
    pick = min(2, len(frames) - 1)
    return frames[pick], layout.instruction, vla.config


def _plot(report: dict, frame, instruction: str, vcfg, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foretell.core.report import write_figure

    names = list(report["methods"])
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
    vals = [[report["methods"][m][k] or 0 for m in names] for k in ("success_rate", "llm_latency_ms", "llm_macs_fraction")]
    for ax, v, title in zip(axes[:3], vals, ("success rate", "LLM latency (ms, median)", "LLM MACs / full")):
        ax.bar(names, v, color=["#777777", "#d62728", "#1f77b4", "#2ca02c"][: len(names)])
        ax.set_title(title)
        if title != "LLM latency (ms, median)":
            ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=20)
    (images, kept, mode) = frame
    p, n = vcfg.patch_size, vcfg.image_size // vcfg.patch_size
    for ax, view in zip(axes[3:], ("third", "wrist")):
        img = images[view].astype(float) / 255.0
        mask = np.zeros((n, n), dtype=bool)
        mask.flat[kept[view]] = True
        big = np.kron(mask, np.ones((p, p), dtype=bool))[..., None]
        ax.imshow(np.where(big, img, img * 0.25))
        ax.set_title(f"{view}: {int(mask.sum())}/{n * n} tokens kept ({mode})")
        ax.axis("off")
    fig.suptitle(f"SpecPrune-VLA testbed: \"{instruction}\"", fontsize=10)
    write_figure(path, fig)
    plt.close(fig)


def run_demo(out_dir: Path, *, seed: int, quick: bool, shared: str | None, device: str = "cpu") -> list[dict]:
    """Short closed-loop comparison on the shipped weights; writes JSON/MD/PNG under ``out_dir``.
    ``device``: where the policy runs (as ``foretell specprune eval --device``)."""
    from foretell.specprune.eval import EvalConfig, evaluate, write_report

    out_dir = Path(out_dir)
    cfg = EvalConfig(episodes=DEMO_EPISODES, seed=seed, methods=DEMO_METHODS, quick=quick,
                     calibration_episodes=2, baselines=not quick, device=device)
    report = evaluate(cfg)
    write_report(report, out_dir / "specprune_eval.json", out_dir / "specprune_eval.md")
    frame, instruction, vcfg = _kept_patch_frame(seed, 40 if quick else 100)
    _plot(report, frame, instruction, vcfg, out_dir / "specprune_demo.png")
    full = report["methods"]["full"]
    rows = []
    for m, r in report["methods"].items():
        sp = report["speedup_vs_full"][m]
        rows.append({
            "system": "specprune", "method": m, "speedup": sp["llm_latency"],
            "quality": f"success {r['successes']}/{r['episodes']}, LLM MACs x{r['llm_macs_fraction']:.2f}",
            "fairness": None,
            "note": (f"{r['visual_tokens_kept']:.0f}/{r['visual_tokens_total']} visual tokens; "
                     f"e2e {full['e2e_latency_ms'] / r['e2e_latency_ms']:.2f}x; {report['episodes']} episodes, "
                     f"same layouts for every method"),
        })
    return rows
