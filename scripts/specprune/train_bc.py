#!/usr/bin/env python
"""Train the SpecPrune-VLA testbed policy by behaviour cloning and write the shipped weights.

Deterministic for a given set of flags. The shipped weights:
    python scripts/specprune/train_bc.py --out src/foretell/specprune/assets/vla           # 64 px
    python scripts/specprune/train_bc.py --out src/foretell/specprune/assets/vla_96px \
        --image-size 96 --warm-start-size 64 --warm-start-steps 2000 --steps 2800 --dagger-at 800,1400,2000,2400
The command line is recorded in the output's training.json ("command").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv=None) -> int:
    from foretell.core.errors import ForetellError
    from foretell.specprune.train import ASSET_DIR, TrainConfig, train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ASSET_DIR), help=f"output directory (default: {ASSET_DIR})")
    for f in dataclasses.fields(TrainConfig):
        kind = type(f.default)
        parse = (lambda text: text.strip().lower() in ("1", "true", "yes", "on")) if kind is bool else kind
        p.add_argument(f"--{f.name.replace('_', '-')}", type=parse, default=f.default,
                       help=f"{f.name} (default: {f.default})")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    try:
        train(cfg, Path(args.out), log=lambda m: print(m, flush=True))
    except ForetellError as exc:
        print(f"train_bc: error: {exc}", file=sys.stderr)
        return 2
    record_command(Path(args.out), ["scripts/specprune/train_bc.py", *(sys.argv[1:] if argv is None else argv)])
    return 0


def record_command(out_dir: Path, argv: list) -> None:
    """Add the command line that wrote ``out_dir`` to its training.json."""
    from foretell.core.report import write_json

    path = out_dir / "training.json"
    info = json.loads(path.read_text())   # keeps the "environment" of the training run
    write_json(path, {"command": "python " + shlex.join(argv), **info})


if __name__ == "__main__":
    raise SystemExit(main())
