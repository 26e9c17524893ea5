#!/usr/bin/env python
"""Merge closed-loop eval reports that ran the same layouts in parallel processes.

Used to halve the wall time of the 100-episode benchmark on a 2-core machine: process A runs
``full,specprune,specprune_no_global,specprune_no_controller`` (+ reference policies), process B
runs ``full,fastv,vla_cache,random`` (its own token-budget calibration on the same first episodes).
Each method's speed-up is computed against the ``full`` of ITS OWN process (same load, interleaved
episode by episode); the first report's ``full`` is the one listed under ``methods``.

    python scripts/specprune/merge_eval.py OUT.json A.json B.json
"""

from __future__ import annotations

import json
from pathlib import Path


def merge(reports: list[dict]) -> dict:
    from foretell.core.errors import ForetellError

    first = reports[0]
    for r in reports[1:]:
        if (r["episodes"], r["seed"]) != (first["episodes"], first["seed"]):
            raise ForetellError("reports to merge must have the same episodes and seed")
    out = {"episodes": first["episodes"], "seed": first["seed"], "methods": {}, "speedup_vs_full": {},
           "processes": []}
    for i, r in enumerate(reports):
        full = r["methods"].get("full")
        names = [m for m in r["methods"] if m not in out["methods"]]
        for m in names:
            out["methods"][m] = dict(r["methods"][m], process=i)
            out["speedup_vs_full"][m] = r.get("speedup_vs_full", {}).get(m)
        out["processes"].append({"methods": list(r["methods"]), "full_reference": full,
                                 "token_budget": r.get("token_budget"), "seconds": r.get("seconds")})
        if r.get("token_budget") is not None:
            out["token_budget"] = r["token_budget"]
            out["token_budget_calibration"] = r.get("token_budget_calibration")
        if "baselines" in r and "baselines" not in out:
            out["baselines"] = r["baselines"]
        out.setdefault("config", r.get("config"))
    out["quick"] = any(r.get("quick") for r in reports)
    from foretell.specprune.eval import paired_counts

    paired = paired_counts(out["methods"])
    if paired is not None:
        out["paired_vs_specprune"] = paired
    return out


def main(argv=None) -> int:
    import argparse

    from foretell.specprune.eval import write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="merged report JSON to write (a Markdown table goes beside it)")
    ap.add_argument("reports", nargs="+", help="eval report JSONs of the same layouts (at least two)")
    args = ap.parse_args(argv)
    if len(args.reports) < 2:
        ap.error("give at least two reports to merge")
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    merged = merge(reports)
    out = Path(args.out)
    write_report(merged, out, out.with_suffix(".md"))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    from foretell.core.errors import run_script

    raise SystemExit(run_script(main))
