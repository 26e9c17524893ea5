#!/usr/bin/env bash
# Device check: the testbed's closed-loop eval on a GPU, eager and with --cuda-graphs, side by side
# (full, specprune, fastv; 10 held-out episodes). From the repo root on a GPU machine:
#   OUT=/some/dir bash benchmarks/gpu/eval_graphs_closed_loop.sh
# (PY=.venv/bin/python DEV=cpu runs the eager half on the CPU; --cuda-graphs then stops with its one-line error.)
export PYTHONPATH=src
F="import sys; from foretell.cli import main; sys.exit(main(sys.argv[1:]))"
for g in "" "--cuda-graphs"; do
  ${PY:-python} -c "$F" specprune eval --episodes 10 --seed 0 --methods full,specprune,fastv --no-baselines --device ${DEV:-cuda} $g --json $OUT/eval${g:+_graphs}.json 2>&1 | grep -v "it/s\]\|it\]" | tail -4
done
${PY:-python} - <<'PY'
import json, os
for n in ("eval.json", "eval_graphs.json"):
    p = os.path.join(os.environ["OUT"], n)
    if os.path.exists(p):
        r = json.load(open(p))
        print(n, {m: {k: v.get(k) for k in ("success_rate", "llm_latency_ms", "visual_tokens_kept", "cuda_graphs")} for m, v in r["methods"].items()})
PY
