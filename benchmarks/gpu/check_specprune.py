"""GPU check of specprune: see benchmarks/gpu/run_all.py.

Sub-steps, each recorded on its own (its result, or its error and traceback):

* exactness: the shipped 96 px policy on the device; on the first observation of three layouts,
  ``apply(vla, SpecPruneConfig(enabled=False))`` and the ``full`` method must give exactly the bare
  ``vla.predict_action`` actions (same device, same kernels); the largest difference to the same
  model on the CPU is recorded (device parity, not asserted to be zero).
* eval: ``evaluate(EvalConfig(device=..., episodes=args.episodes))`` over all seven methods (peers at
  specprune's calibrated token budget, baselines included): success, LLM-backbone latency (the
  engine synchronises the GPU around the backbone), e2e latency, MACs fraction and visual tokens
  per method, and the speed-ups against ``full``.
* oft_7b_shape: the pruning engine at OpenVLA-OFT scale (see ``_oft_7b_shape``): a random-init
  Prismatic/OFT-structured model with a Llama-2-7B backbone in bfloat16 behind
  ``PrismaticOFTAdapter``, ~606 tokens; LLM-backbone time of the bare model, the engine's ``full``,
  SpecPrune (defaults and the released code's settings, coarse and fine mode) and FastV at
  SpecPrune's token budget, with tokens kept, MACs fraction, speed-ups and the scoring overhead;
  per variant the host reads of device values in one query (``foretell.specprune.syncs``, asserted:
  at most 2 for SpecPrune, 0 for full and FastV; on CUDA also torch's sync debug mode count) and for
  full / SpecPrune coarse / FastV a torch.profiler summary (kernel time, busy fraction, launches).
  Also the floor any pruning could reach: the bare backbone on 94 + n rows (n visual tokens kept),
  eagerly and replayed from a CUDA graph (``backbone_floor``), and ``*_graphs`` variants of full,
  SpecPrune and FastV with ``cuda_graphs=True`` (asserted: the same actions as the eager variant,
  and graphs replayed; on the CPU the emulated backend stands in).

* eval_graphs: the testbed closed loop (full, specprune, fastv) eagerly and with ``--cuda-graphs``
  in one process (``_eval_graphs``); CUDA only, skipped on the CPU.

``args.subset`` (``run_all.py --subset``): the sub-steps to run; none of these names: all of them.
"""

from __future__ import annotations

import torch

import common
from specprune_oft7b import _oft_7b_shape


def run(args) -> dict:
    res = {"device": common.DEV}
    steps = (("exactness", _exactness), ("eval", lambda: _eval(args.episodes)), ("oft_7b_shape", _oft_7b_shape),
             ("eval_graphs", lambda: _eval_graphs(args.episodes)))
    chosen = set(getattr(args, "subset", None) or ()) & {n for n, _ in steps}  # run_all --subset; none known: all
    steps = tuple((n, fn) for n, fn in steps if not chosen or n in chosen)
    res["substeps"] = [n for n, _ in steps]
    for name, fn in steps:
        common.run_substep(res, name, fn)
    res["ok"] = all(bool(res[n].get("ok")) for n, _ in steps)
    return res


def _observations(vla, tok, layouts):
    """(images, instruction ids, proprio) of each layout's first observation, as CPU tensors (as the
    episode runner passes them: the model moves them to its device)."""
    from foretell.specprune.eval import image_tensors
    from foretell.specprune.sim import TabletopEnv
    from foretell.specprune.train import INSTRUCTION_LEN

    env = TabletopEnv(image_size=vla.config.image_size, horizon=100)
    out = []
    for layout in layouts:
        obs = env.reset(layout)
        ids = tok.encode_batch([layout.instruction], length=INSTRUCTION_LEN)
        out.append((image_tensors(obs["images"]), ids, torch.from_numpy(obs["proprio"]).unsqueeze(0)))
    return out


def _exactness() -> dict:
    from foretell.specprune import SpecPruneConfig, apply
    from foretell.specprune.methods import build_method
    from foretell.specprune.sim import sample_layout
    from foretell.specprune.train import load_policy

    vla, tok = load_policy()
    cpu_vla = load_policy()[0].eval()
    vla = vla.to(common.DEV).eval()
    out = {"equal_disabled": [], "equal_full_method": [], "max_abs_diff_vs_cpu": [], "actions_device": None}
    for images, ids, prop in _observations(vla, tok, [sample_layout(0, i) for i in range(3)]):
        bare = vla.predict_action(images, ids, prop)
        out["actions_device"] = str(bare.device)
        with apply(vla, SpecPruneConfig(enabled=False)) as h:
            out["equal_disabled"].append(bool(torch.equal(h.predict_action(images, ids, prop), bare)))
        with build_method("full", vla) as h:
            out["equal_full_method"].append(bool(torch.equal(h.predict_action(images, ids, prop), bare)))
        ref = cpu_vla.predict_action(images, ids, prop)
        out["max_abs_diff_vs_cpu"].append(float((bare.cpu() - ref).abs().max()))
    out["ok"] = bool(all(out["equal_disabled"]) and all(out["equal_full_method"])
                     and out["actions_device"].startswith(common.DEV) and max(out["max_abs_diff_vs_cpu"]) < 1e-2)
    return out


def _eval_graphs(episodes: int) -> dict:
    """The testbed closed loop with ``cuda_graphs`` on (full, specprune, fastv), against the same
    methods eagerly in the same process: success, LLM latency and the graph counts per method. The
    graphed ``full`` must succeed exactly as the eager one (identical actions). CUDA only."""
    from foretell.specprune.eval import EvalConfig, evaluate

    if not common.DEV.startswith("cuda"):
        return {"ok": True, "skipped": "CUDA graphs need a GPU"}
    methods = ("full", "specprune", "fastv")
    out = {}
    for name, graphs in (("eager", False), ("cuda_graphs", True)):
        rep = evaluate(EvalConfig(device=common.DEV, episodes=episodes, methods=methods, baselines=False,
                                  cuda_graphs=graphs), log=lambda *a: None)
        out[name] = {"token_budget": rep["token_budget"],
                     "methods": {m: {k: r.get(k) for k in ("success_rate", "per_episode_success", "llm_latency_ms",
                                                          "visual_tokens_kept", "cuda_graphs")}
                                 for m, r in rep["methods"].items()}}
    e, g = out["eager"]["methods"], out["cuda_graphs"]["methods"]
    out["ok"] = bool(g["full"]["per_episode_success"] == e["full"]["per_episode_success"]
                     and all((g[m]["cuda_graphs"] or {}).get("replays", 0) > 0 for m in ("full", "fastv")))
    return out


def _eval(episodes: int) -> dict:
    from foretell.specprune.eval import EvalConfig, evaluate
    from foretell.specprune.methods import METHOD_NAMES

    rep = evaluate(EvalConfig(device=common.DEV, episodes=episodes, methods=METHOD_NAMES), log=lambda *a: None)
    keys = ("success_rate", "successes", "episodes", "llm_latency_ms", "e2e_latency_ms", "llm_macs_fraction",
            "visual_tokens_kept", "queries", "mode_fraction_fine")
    out = {"config_device": rep["config"]["eval"]["device"], "episodes": rep["episodes"],
           "token_budget": rep["token_budget"], "eval_seconds": rep["seconds"],
           "methods": {m: {k: r.get(k) for k in keys} for m, r in rep["methods"].items()},
           "speedup_vs_full": rep.get("speedup_vs_full"),
           "baselines": {k: v["success_rate"] for k, v in rep.get("baselines", {}).items()}}
    m = out["methods"]
    out["ok"] = bool(out["config_device"] == common.DEV and set(m) == set(METHOD_NAMES)
                     and all(r["episodes"] == episodes and (r["llm_latency_ms"] or 0) > 0 for r in m.values())
                     and m["full"]["llm_macs_fraction"] == 1.0 and m["specprune"]["llm_macs_fraction"] < 1.0
                     and m["full"]["successes"] > 0)
    return out
