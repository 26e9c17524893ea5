#!/usr/bin/env bash
# SpecPrune-VLA closed-loop benchmark on the tabletop testbed (shipped weights, CPU, 1 thread each).
# All seven methods run on the same 100 seeded layouts, in two parallel processes to halve the wall
# time on a 2-core machine; each process runs `full` as its own latency reference, interleaved
# episode by episode with its methods. The peers get specprune's measured mean token budget.
# Writes benchmarks/results/specprune_eval${TAG}.{json,md} (+ the two per-process reports).
# Environment: EPISODES (100), SEED (0), OUT (benchmarks/results), WEIGHTS (a weights directory;
# default: the eval CLI's default policy, the 96 px one; the committed untagged specprune_eval.json
# is the 64 px policy's run: WEIGHTS=src/foretell/specprune/assets/vla), TAG (suffix of the output names, e.g. _96px), SPCFG
# (SpecPruneConfig changes as JSON, passed as --specprune-config; default: the testbed operating point).
#   WEIGHTS=src/foretell/specprune/assets/vla_96px TAG=_96px benchmarks/specprune_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-.venv/bin/python}"
EP="${EPISODES:-100}"; SEED="${SEED:-0}"; OUT="${OUT:-benchmarks/results}"; TAG="${TAG:-}"; mkdir -p "$OUT"
W=(); if [ -n "${WEIGHTS:-}" ]; then W=(--weights "$WEIGHTS"); fi
if [ -n "${SPCFG:-}" ]; then W+=(--specprune-config "$SPCFG"); fi
"$PY" -m foretell.cli specprune eval --episodes "$EP" --seed "$SEED" --no-baselines \
    --methods full,specprune,specprune_no_global,specprune_no_controller --json "$OUT/specprune_eval${TAG}_a.json" "${W[@]}" &
A=$!
"$PY" -m foretell.cli specprune eval --episodes "$EP" --seed "$SEED" \
    --methods full,fastv,vla_cache,random --json "$OUT/specprune_eval${TAG}_b.json" "${W[@]}" &
B=$!
wait $A; wait $B
"$PY" scripts/specprune/merge_eval.py "$OUT/specprune_eval${TAG}.json" "$OUT/specprune_eval${TAG}_a.json" "$OUT/specprune_eval${TAG}_b.json"
