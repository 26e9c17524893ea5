"""``foretell demo``: a short end-to-end run of all four systems on the embedded defaults.

Each system provides ``foretell.<system>.demo.run_demo(out_dir, *, seed, quick, shared, device)`` that
runs its own small job, writes its JSON/Markdown/PNG under ``out_dir`` and returns summary rows:
``{"system", "method", "speedup", "quality", "fairness", "note"}`` (missing values are None).
This module runs them, prints one table and writes ``summary.json`` / ``summary.md``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from foretell.core.argtypes import seed_int
from foretell.core.device import add_device_argument, resolve_device
from foretell.core.errors import ForetellError

SYSTEMS = ("specdiff", "specprune", "specee", "nifa")
COLUMNS = ("system", "method", "speedup", "quality", "fairness", "note")


def register(sub) -> None:
    p = sub.add_parser("demo", help="run all four systems end to end on the embedded defaults",
                       description="Short end-to-end run of SpecDiff, SpecPrune-VLA, SpecEE and NIFA "
                                   "on the models and data that ship with foretell; prints one summary "
                                   "table and writes JSON, Markdown and PNG plots.")
    p.add_argument("--out", default="reports/demo", help="output directory (default: reports/demo)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed for every system (default: 0)")
    p.add_argument("--quick", action="store_true", help="an even shorter run (smoke test)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)")
    p.add_argument("--shared-dir", default=None,
                   help="directory of the shared data (default: ../shared beside the repo)")
    add_device_argument(p)
    p.set_defaults(func=_cmd_demo)


def _parse_systems(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if bad or not names:
        raise ForetellError(f"unknown system(s) {bad or text!r} in --systems; accepted: {', '.join(SYSTEMS)}")
    if len(set(names)) != len(names):
        raise ForetellError(f"--systems {text!r} names a system twice; list each once")
    return names


def run_demo(out: Path, *, seed: int = 0, quick: bool = False, systems=SYSTEMS, shared=None,
             device: str = "cpu") -> dict:
    """Run the selected systems' demos on ``device``; a failing system is recorded, the others still run."""
    from foretell.core.report import environment_info, markdown_table, write_json, write_text

    out = Path(out)
    rows, failures, seconds = [], {}, {}
    for name in systems:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"foretell.{name}.demo")
            rows.extend(module.run_demo(out / name, seed=seed, quick=quick, shared=shared, device=device))
        except ForetellError as exc:
            failures[name] = str(exc)
            rows.append({"system": name, "method": "-", "note": f"failed: {exc}"})
        seconds[name] = time.perf_counter() - t0
    report = {"seed": seed, "quick": quick, "device": str(device), "systems": list(systems), "rows": rows,
              "seconds": seconds, "failures": failures, "environment": environment_info()}
    write_json(out / "summary.json", report)
    table = markdown_table(COLUMNS, ([r.get(c) for c in COLUMNS] for r in rows), digits=2)
    write_text(out / "summary.md", "# foretell demo summary\n\n" + table +
               "\nPer-system reports: " + ", ".join(f"`{s}/`" for s in systems) + "\n")
    return report


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="foretell demo summary")
    for c in COLUMNS:
        table.add_column(c)
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append("-" if v is None else (f"{v:.2f}x" if c == "speedup" else str(v)))
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # piped or logged: don't squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


def _cmd_demo(args) -> int:
    import sys

    systems = _parse_systems(args.systems)
    device = str(resolve_device(args.device))
    if "nifa" in systems and args.shared_dir is not None and not Path(args.shared_dir).is_dir():
        raise ForetellError(f"--shared-dir {args.shared_dir} is not a directory; pass the folder that holds "
                            "data/graphs (the repository's ../shared)")
    report = run_demo(Path(args.out), seed=args.seed, quick=args.quick, systems=systems,
                      shared=args.shared_dir, device=device)
    print_table(report["rows"])
    print(f"reports written to {Path(args.out).resolve()}")
    for name, message in report["failures"].items():  # the table is on stdout; failures also go to stderr
        print(f"foretell demo: {name} failed: {message}", file=sys.stderr)
    return 1 if report["failures"] else 0
