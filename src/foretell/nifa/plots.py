"""Bar plot of delta-SP / delta-EO before and after the attacks (matplotlib, Agg)."""

from __future__ import annotations


def fairness_figure(report: dict):
    """One panel per metric (dSP, dEO as coded); bars: clean, NIFA, baselines, per victim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    victims = list(report["victims"])
    graphs = ["clean", "NIFA"] + list(report["baselines"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(graphs)
    for ax, (key, title) in zip(axes, (("sp", "ΔSP (x100)"), ("eo", "ΔEO as coded (x100)"))):
        for j, g in enumerate(graphs):
            vals, errs = [], []
            for v in victims:
                m = (report["victims"][v]["clean"] if g == "clean" else report["victims"][v]["attacked"]
                     if g == "NIFA" else report["baselines"][g][v]["attacked"])
                vals.append(m[key])
                errs.append(m[f"{key}_std"])
            ax.bar(np.arange(len(victims)) + j * width, vals, width, yerr=errs, label=g, capsize=2)
        ax.set_xticks(np.arange(len(victims)) + width * (len(graphs) - 1) / 2, victims)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"NIFA on {report['dataset']} (seeds {report['seeds']})")
    fig.tight_layout()
    return fig
