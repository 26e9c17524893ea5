#!/usr/bin/env bash
# SpecPrune-VLA closed-loop benchmark on the tabletop testbed (shipped weights, CPU, 1 thread each).
# All seven methods run on the same 100 seeded layouts, in two parallel processes to halve the wall
# time on a 2-core machine; each process runs `full` as its own latency reference, interleaved
# episode by episode with its methods. The peers get specprune's measured mean token budget.
# Writes benchmarks/results/specprune_eval.{json,md} (+ the two per-process reports).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-.venv/bin/python}"
EP="${EPISODES:-100}"; SEED="${SEED:-0}"; OUT="${OUT:-benchmarks/results}"; mkdir -p "$OUT"
"$PY" -m foretell.cli specprune eval --episodes "$EP" --seed "$SEED" --no-baselines \
    --methods full,specprune,specprune_no_global,specprune_no_controller --json "$OUT/specprune_eval_a.json" &
A=$!
"$PY" -m foretell.cli specprune eval --episodes "$EP" --seed "$SEED" \
    --methods full,fastv,vla_cache,random --json "$OUT/specprune_eval_b.json" &
B=$!
wait $A; wait $B
"$PY" scripts/specprune/merge_eval.py "$OUT/specprune_eval.json" "$OUT/specprune_eval_a.json" "$OUT/specprune_eval_b.json"
