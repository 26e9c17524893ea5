#!/usr/bin/env bash
# SpecPrune-VLA closed-loop benchmark on the tabletop testbed (shipped weights, CPU, 1 thread).
# All seven methods run side by side on the same 100 seeded layouts; the peers get specprune's
# measured mean token budget. Writes benchmarks/results/specprune_eval.{json,md}.
# Takes roughly 20-40 minutes on a 2-core CPU (more when the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"${PYTHON:-.venv/bin/python}" -m foretell.cli specprune eval --episodes "${EPISODES:-100}" --seed "${SEED:-0}" \
    --threads "${THREADS:-1}" --json benchmarks/results/specprune_eval.json "$@"
