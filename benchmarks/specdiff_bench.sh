#!/usr/bin/env bash
# SpecDiff benchmark on both shipped digits testbeds (SD3-class and FLUX-class), 28 steps.
# Every method samples the same noise; timed rounds are interleaved; speedup = median(full)/median(method).
# Writes benchmarks/results/specdiff_{sd3,flux}_digits.{json,png} (+ _samples.png).
# Roughly 10-15 minutes per model on an idle 2-core CPU; much longer on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-.venv/bin/python}"
for m in sd3 flux; do
  "$PY" -m foretell.cli specdiff bench --model "$m-digits" --steps 28 --samples "${SAMPLES:-10}" \
      --repeats "${REPEATS:-3}" --cache-rate "${CACHE_RATE:-0.9}" --speculative-steps "${K:-2}" \
      --seed "${SEED:-0}" --threads "${THREADS:-0}" \
      --json "benchmarks/results/specdiff_${m}_digits.json" "$@"
done
