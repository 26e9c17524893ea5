"""Device check: run each system's Python API on a CUDA GPU and time it there, side by side.

Not part of the test suite (CI has no GPU). On a machine with a GPU, from the repo root:

    PYTHONPATH=src python benchmarks/gpu/run_all.py --out gpu_check.json \
        [--parts specdiff,specprune,specee,nifa] [--nifa-data DIR_WITH_DBLP_FILES] [--device cuda]

``--device cpu`` runs the same script on the CPU (a smoke test of the script itself). Each part
lives in ``check_<part>.py`` with a ``run(args) -> dict``; a part's failure is recorded with its
traceback and the next part runs. A part's ``ok`` is true only when its own assertions held.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from foretell.core.argtypes import int_at_least

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PARTS = ("specdiff", "specprune", "specee", "nifa")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--episodes", type=int_at_least(1), default=4, help="closed-loop episodes per method (specprune)")
    ap.add_argument("--nifa-data", default=None, help="folder with the DBLP files (nifa)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu to smoke-test the script")
    ap.add_argument("--subset", default="", help="comma-separated sub-steps to run inside each part "
                    "(e.g. oft_7b_shape,flux_dev); default: all. Parts that do not know the name run all")
    args = ap.parse_args()
    args.subset = {s.strip() for s in args.subset.split(",") if s.strip()}
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        sys.exit(f"run_all: unknown part(s) {', '.join(unknown)}; accepted: {', '.join(PARTS)}")
    common.set_device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("run_all: no CUDA device visible to torch; run it on a GPU machine (or pass --device cpu)")
    report = {"torch": torch.__version__, "python": platform.python_version(),
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "parts": {}}
    for name in parts:
        t0 = time.perf_counter()
        try:
            r = importlib.import_module(f"check_{name}").run(args)
        except Exception as exc:  # recorded, the next part still runs
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        r["seconds"] = time.perf_counter() - t0
        report["parts"][name] = r
        print(name, json.dumps({k: v for k, v in r.items() if k != "traceback"}, default=str)[:2000], flush=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
