"""How much could early exit save inside speculative decoding's verify passes, with a perfect predictor?

python benchmarks/specee/verify_oracle.py [--num-prompts 10] [--max-new-tokens 48] [--seed 5]
    --json benchmarks/specee/verify_oracle_smollm2_cpu.json

The single-token oracle (``oracle_avg_layers`` of the bench) bounds ``specee``. This is the same
bound for the verify pass of ``speculative`` / ``specee+speculative``: on the lossless speculative
trajectory (shipped draft head, default gamma and tree), each verify pass is run in full while the
full-vocabulary argmax of every row is recorded after every layer. A pass could have stopped after
layer L with the same result iff the tree walk on layer L's argmaxes accepts the same tokens and the
same bonus token, i.e. every row on the accepted path already has its final argmax at L. The
earliest such L is the pass's oracle exit. Three versions: ``any`` (any row, any layer),
``chain`` (the merged method's rule: a path through a side leaf runs to the end) and ``scheduled``
(``chain`` at the predictors' offline layers only).

Then the layers saved become a speed bound: the share of each method's decode time spent in the
verify passes' layers is timed in the same run (``stepper.run`` of the verify passes), and a
perfect, free predictor could remove at most ``saved fraction x that share`` of it (layers cost the
same; the deferred rows' later K/V fill is counted as free, so the bound is generous).
"""

import argparse
import os
import time
from collections import Counter

import torch

from foretell.core.argtypes import int_at_least, seed_int
from foretell.core.report import write_json
from foretell.core.seed import seed_everything
from foretell.specee.engine import SpecEE
from foretell.specee.kv import LayerStepper
from foretell.specee.loading import chat_ids, read_prompts
from foretell.specee.rotation import time_in_rotation


class VerifyRecorder(LayerStepper):
    """A stepper that, for every pass after the prefill, records each row's argmax after each layer
    (``record=True``) or only times the pass (``record=False``)."""

    def __init__(self, acc, kv_strategy, record: bool):
        self.record, self.passes, self.verify_seconds = record, [], 0.0
        super().__init__(acc, kv_strategy)

    def reset_state(self) -> None:
        super().reset_state()
        self._prefill = True

    def run(self, tokens, exit_fn=None, *, depths=None, ancestors=None):
        if self._prefill or tokens is None:
            self._prefill = False
            return super().run(tokens, exit_fn, depths=depths, ancestors=ancestors)
        if not self.record:
            t0 = time.perf_counter()
            out = super().run(tokens, exit_fn, depths=depths, ancestors=ancestors)
            self.verify_seconds += time.perf_counter() - t0
            return out
        acc, per_layer = self.acc, []

        def watch(layer, h):
            per_layer.append(acc.logits(acc.norm(h)).argmax(-1).tolist())
            return None

        h, layer, dec = super().run(tokens, watch, depths=depths, ancestors=ancestors)
        per_layer.append(acc.logits(acc.norm(h)).argmax(-1).tolist())
        q = tokens.numel()
        self.passes.append({"tokens": tokens.tolist(), "depths": list(depths) if depths is not None else list(range(q)),
                            "argmax": per_layer})
        return h, layer, dec


def chain_length(p: dict) -> int:
    """The chain rows of a verify block are rows 1..gamma, at depth = row index."""
    return max(i for i, d in enumerate(p["depths"]) if d == i)


def walk(tokens: list[int], depths: list[int], argmax: list[int]) -> list[int]:
    """Rows on the accepted path (root first) of a verify block: chain rows have depth = row index,
    a side leaf at depth j hangs from chain row j-1 (the layout of ``DraftTree.build``)."""
    gamma = chain_length({"depths": depths})
    parents = [-1] + list(range(gamma)) + [d - 1 for d in depths[gamma + 1:]]
    rows, cur = [0], 0
    while True:
        nxt = next((c for c, p in enumerate(parents) if p == cur and tokens[c] == argmax[cur]), None)
        if nxt is None:
            return rows
        rows.append(nxt)
        cur = nxt


def oracle_exit(p: dict, layers: set[int] | None, chain_only: bool) -> int:
    """Layers a perfect predictor would have run for pass ``p`` (1..n); ``p["path"]`` is its final walk."""
    final = p["argmax"][-1]
    n = len(p["argmax"])
    path = p["path"]
    gamma = chain_length(p)
    if chain_only and any(r > gamma for r in path):
        return n
    for layer in range(n - 1):
        if layers is not None and layer not in layers:
            continue
        if all(p["argmax"][layer][r] == final[r] for r in path):
            return layer + 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int_at_least(1), default=10)
    ap.add_argument("--max-new-tokens", type=int_at_least(1), default=48)
    ap.add_argument("--seed", type=seed_int, default=5)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    torch.set_num_threads(1)
    seed_everything(args.seed)
    load = [os.getloadavg()[0]]
    ee = SpecEE.from_pretrained(None)
    inputs = [chat_ids(ee.tokenizer, p) for p in read_prompts(None, "eval")[: args.num_prompts]]
    n_layers = ee.acc.num_layers
    offline = set(ee.predictors.config.offline_layers or ee.predictors.config.layers)
    plain = ee.stepper

    # 1. the lossless trajectory, every verify row's argmax after every layer
    ee.stepper = rec = VerifyRecorder(ee.acc, ee.config.kv_strategy, record=True)
    emitted = 0
    for ids in inputs:
        first = len(rec.passes)
        out = ee.generate(ids, max_new_tokens=args.max_new_tokens, method="speculative")
        new = out[0, ids.shape[1]:].tolist()
        emitted += len(new)
        replay = new[:1]                                 # the prefill's token, then each pass's walk
        for p in rec.passes[first:]:
            p["path"] = path = walk(p["tokens"], p["depths"], p["argmax"][-1])   # the final layer's walk
            replay += [p["tokens"][r] for r in path[1:]] + [p["argmax"][-1][path[-1]]]
        if replay[: len(new)] != new:
            raise SystemExit("the recorded verify passes do not replay the generated tokens: walk() is out of "
                             "step with foretell.specee.tree")
    passes = rec.passes
    versions = {"any": (None, False), "chain": (None, True), "scheduled": (offline, True)}
    oracle = {}
    for name, (layers, chain_only) in versions.items():
        run = [oracle_exit(p, layers, chain_only) for p in passes]
        oracle[name] = {"avg_layers": sum(run) / len(run), "saved_fraction": 1 - sum(run) / (n_layers * len(run)),
                        "passes_that_exit": sum(1 for r in run if r < n_layers) / len(run),
                        "histogram": dict(sorted(Counter(run).items()))}
    through_side = sum(1 for p in passes if any(r > chain_length(p) for r in p["path"]))

    # 2. timing: speed-ups in rotation (plain stepper), then each method's share of time in verify layers
    ee.stepper = plain
    for m in ("speculative", "specee+speculative"):
        ee.generate(inputs[0], max_new_tokens=4, method=m)

    def variant(method):
        def go(pi, ids):
            out = ee.generate(ids, max_new_tokens=args.max_new_tokens, method=method)
            return out, len(ee.last_stats.layers)
        return go

    speed = time_in_rotation({m: variant(m) for m in ("full", "speculative", "specee+speculative")}, inputs)
    share = {}
    for m in ("speculative", "specee+speculative"):
        ee.stepper = timer = VerifyRecorder(ee.acc, ee.config.kv_strategy, record=False)
        t0 = time.perf_counter()
        for ids in inputs:
            ee.generate(ids, max_new_tokens=args.max_new_tokens, method=m)
        share[m] = timer.verify_seconds / (time.perf_counter() - t0)
    ee.stepper = plain

    bound = {
        "speculative_with_perfect_free_exits": speed["speculative"]["speedup"] / (1 - oracle["any"]["saved_fraction"] * share["speculative"]),
        "merged_with_perfect_predictor": speed["specee+speculative"]["speedup"]
        / (1 - oracle["chain"]["saved_fraction"] * share["specee+speculative"]),
        "merged_with_perfect_predictor_scheduled_layers": speed["specee+speculative"]["speedup"]
        / (1 - oracle["scheduled"]["saved_fraction"] * share["specee+speculative"]),
    }
    report = {"model": "SmolLM2-135M-Instruct", "prompts": len(inputs), "new_tokens": emitted,
              "verify_passes": len(passes), "tokens_per_pass": emitted / max(1, len(passes) + len(inputs)),
              "paths_through_side_leaf": through_side / len(passes), "num_layers": n_layers,
              "offline_layers": sorted(offline), "oracle": oracle, "methods": speed,
              "verify_layer_time_share": share, "bounds": bound,
              "config": {"torch_threads": 1, "seed": args.seed, "gamma": ee.config.gamma, "tree": list(ee.config.tree),
                         "kv_strategy": ee.config.kv_strategy, "linear_kernel": ee.linear_kernel,
                         "load_average_1min": load + [os.getloadavg()[0]]}}
    write_json(args.json, report)
    for name, o in oracle.items():
        print(f"oracle {name:>9}: {o['avg_layers']:.2f} of {n_layers} layers per verify pass, saves "
              f"{o['saved_fraction']:.1%}, {o['passes_that_exit']:.0%} of passes exit")
    for m, r in speed.items():
        print(f"{m:>20}: x{r['speedup']:.3f}  verify-layer share {share.get(m, float('nan')):.2f}")
    for name, b in bound.items():
        print(f"bound {name}: x{b:.3f}")


if __name__ == "__main__":
    main()
