#!/usr/bin/env python
"""Train the SpecDiff digits testbed models (SD3-class and FLUX-class) with rectified flow on CPU.

Deterministic for a given --seed and step count (fixed thread count). Writes
<out>/sd3-digits/ and <out>/flux-digits/ (config.json, model.safetensors, train_log.json).
With --model both the two models train in parallel processes, one thread each (2 cores).

    python scripts/specdiff/train_digits.py --model both --threads 1 --out src/foretell/specdiff/assets

300 steps of batch 32: both models in parallel took 4 min 51 s on a quiet 2-core machine and gave
the shipped weights bit for bit; on a machine shared with other jobs the shipped run took 34 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from foretell.core.argtypes import int_at_least, seed_int, threads_int


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("sd3", "flux", "both"), default="both", help="which testbed model(s)")
    p.add_argument("--steps", type=int_at_least(1), default=300, help="optimizer steps per model (default 300)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="batch size (default 32)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="optional per-model wall-clock cap; stops early (logged, not reproducible) (default 0 = none)")
    p.add_argument("--threads", type=threads_int(1), default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="src/foretell/specdiff/assets", help="output folder")
    p.add_argument("--classifier", action="store_true", help="also train and save the digits classifier")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    from foretell.specdiff.testbed.models import flux_digits_config, sd3_digits_config
    from foretell.specdiff.testbed.train import TrainConfig, save_trained, train_digits_model

    if args.model == "both":  # one process per model, in parallel
        import subprocess
        import sys

        base = [sys.executable, __file__, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                "--minutes", str(args.minutes), "--threads", str(args.threads), "--seed", str(args.seed),
                "--out", args.out]
        procs = [subprocess.Popen(base + ["--model", kind]) for kind in ("sd3", "flux")]
        codes = [p.wait() for p in procs]
        kinds = ()
        if any(codes):
            return max(codes)
    else:
        kinds = (args.model,)
    for kind in kinds:
        t0 = time.perf_counter()
        mcfg = sd3_digits_config() if kind == "sd3" else flux_digits_config()
        tcfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                           max_minutes=args.minutes)
        model, log = train_digits_model(mcfg, tcfg)
        out = save_trained(model, log, Path(args.out) / f"{kind}-digits")
        print(f"{kind}: {log['steps_done']} steps in {time.perf_counter() - t0:.0f}s, "
              f"loss {log['loss_first_20']:.3f} -> {log['loss_last_20']:.3f}; saved to {out}")
    if args.classifier:
        from foretell.specdiff.testbed.classifier import train_classifier

        clf, info = train_classifier(seed=args.seed)
        clf.save(Path(args.out) / "digits-classifier", info)
        print(f"classifier: test accuracy {info['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    from foretell.core.errors import run_script

    raise SystemExit(run_script(main))
