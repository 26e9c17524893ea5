"""The before/after table of a report: rich on the terminal, Markdown for docs."""

from __future__ import annotations

from foretell.core.report import markdown_table

HEADERS = ("victim", "graph", "acc", "dSP", "dEO (as coded)", "dEO (TPR gap)")


def _cell(m: dict, key: str) -> str:
    std = m.get(f"{key}_std")
    return f"{m[key]:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def report_rows(report: dict) -> list[list[str]]:
    """One row per victim and graph (clean, NIFA, each baseline); metrics x100, mean ± std."""
    rows = []
    for victim, res in report["victims"].items():
        graphs = [("clean", res["clean"]), ("NIFA", res["attacked"])]
        graphs += [(b, report["baselines"][b][victim]["attacked"]) for b in report["baselines"]
                   if victim in report["baselines"][b]]
        for gname, m in graphs:
            rows.append([victim, gname, _cell(m, "acc"), _cell(m, "sp"), _cell(m, "eo"), _cell(m, "eo_tpr")])
    return rows


def markdown(report: dict) -> str:
    return markdown_table(HEADERS, report_rows(report))


def print_report(report: dict) -> None:
    """Print the table with rich."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"NIFA on {report['dataset']} ({report['num_nodes']} nodes, {report['num_injected']} injected "
                    f"x {report['edges_per_injected']} edges; seeds {report['seeds']}; x100 on test nodes)")
    for h in HEADERS:
        t.add_column(h)
    for row in report_rows(report):
        t.add_row(*row)
    Console().print(t)
    print(f"attack time: {report['attack_seconds']:.1f} s per seed (mean)")
