"""Print the Markdown tables and the issue's effect checks for `foretell nifa run` JSON reports.

    python scripts/nifa/results_tables.py benchmarks/results/nifa_dblp.json [...]

Check per victim (metrics x100, mean over seeds): NIFA raises dSP and dEO (as coded) over clean
by more than the larger seed std of the two, and by more than random injection raises them;
accuracy falls by at most 2 points.
"""

from __future__ import annotations

import json


def checks(report: dict) -> list[list[str]]:
    rows = []
    for v, res in report["victims"].items():
        c, a = res["clean"], res["attacked"]
        r = report["baselines"].get("random", {}).get(v, {}).get("attacked")
        out = [v]
        for key in ("sp", "eo"):
            rise = a[key] - c[key]
            std = max(a[f"{key}_std"], c[f"{key}_std"])
            rrise = (r[key] - c[key]) if r else float("nan")
            ok = rise > std and (r is None or rise > rrise)
            out.append(f"{rise:+.2f} (std {std:.2f}, random {rrise:+.2f}) {'yes' if ok else 'no'}")
        drop = c["acc"] - a["acc"]
        out.append(f"{drop:.2f} {'yes' if drop <= 2 else 'no'}")
        rows.append(out)
    return rows


def timing(report: dict) -> list[list[str]]:
    """Per seed: Bayesian GCN, feature attack, attack total, the 4 plain victims clean + attacked, sum."""
    rows = []
    for r in report.get("per_seed", []):
        sec = r["attack_info"]["seconds"]
        plain = [r["runs"][v][g]["seconds"] for v in ("gcn", "sage", "appnp", "sgc") for g in ("clean", "nifa")
                 if v in r["runs"] and g in r["runs"][v]]
        if len(plain) < 8:
            continue
        rows.append([str(r["seed"]), f"{sec['uncertainty']:.0f}", f"{sec['features']:.0f}", f"{sec['total']:.0f}",
                     f"{sum(plain):.0f}", f"{sec['total'] + sum(plain):.0f}"])
    return rows


def main(argv=None) -> int:
    import argparse

    from foretell.core.errors import ForetellError
    from foretell.core.report import markdown_table
    from foretell.nifa.table import markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="`foretell nifa run` JSON reports")
    for path in ap.parse_args(argv).reports:
        rep = json.loads(open(path).read())
        missing = [k for k in ("dataset", "seeds", "num_injected", "edges_per_injected", "attack_seconds", "victims")
                   if not isinstance(rep, dict) or k not in rep]
        if missing:
            raise ForetellError(f"{path} is not a `foretell nifa run` report (missing {', '.join(missing)})")
        print(f"### {rep['dataset']}: seeds {rep['seeds']}, {rep['num_injected']} injected x "
              f"{rep['edges_per_injected']} edges, attack {rep['attack_seconds']:.0f} s/seed"
              f"{'' if rep.get('complete', True) else ' (partial report)'}\n")
        print(markdown(rep))
        print()
        print(markdown_table(["victim", "ΔSP rise > std and > random", "ΔEO rise > std and > random",
                              "acc drop ≤ 2"], checks(rep)))
        print()
        rows = timing(rep)
        if rows:
            print(markdown_table(["seed", "Bayesian GCN s", "feature attack s", "attack s (target 60)",
                                  "4 plain victims clean + attacked s", "total s (target 180)"], rows))
            print()


if __name__ == "__main__":
    from foretell.core.errors import run_script

    raise SystemExit(run_script(main))
