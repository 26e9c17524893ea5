"""Closed-loop evaluation of pruning methods on the tabletop testbed.

Every method runs the same seeded episode layouts. Within one episode index the methods run one
after another in a rotating order (so machine-load drifts hit all of them alike). A policy query
returns an 8-step chunk that is executed open loop; the policy is re-queried when the chunk is used
up or when the method's controller asks for it (``handle.requery_needed``, switch into fine mode).
The peers (``fastv``, ``vla_cache``, ``random``) get the token budget that ``specprune`` keeps on
average, measured on calibration episodes of the same run before the main loop.

Reported per method: ``success_rate``, ``llm_latency_ms`` (median of the handle's LLM-backbone
seconds x 1000), ``e2e_latency_ms`` (median of the whole ``predict_action`` call),
``visual_tokens_kept`` and ``llm_macs_fraction`` (pruned / unpruned backbone MACs).
Two reference policies run on the same layouts: ``blind`` (the full model with all images zeroed)
and ``random_actions`` (uniform random actions).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from foretell.core.errors import ForetellError

QUICK_EPISODES = 2
QUICK_HORIZON = 30
CALIBRATION_EPISODES = 8


# Named SpecPruneConfig changes (``--specprune-config NAME``). "paper": the paper's token counts
# scaled to the patches per view (SpecPruneConfig defaults). "tight": fewer tokens in coarse mode
# (static cap 0.95, top-k 8/256 and 6/256, global top-k the same) and a larger static cap in fine mode
# (0.85 instead of 180/256; fine mode still keeps more than coarse mode), chosen for the 96 px policy on
# SCREENING layouts (seeds 7 and 8, scripts/specprune/screen_budgets.py), never on the seed-0 layouts.
OPERATING_POINTS = {
    "paper": {},
    "tight": {"static_cap_coarse": 0.95, "topk_coarse": (8 / 256, 6 / 256), "global_topk": (8 / 256, 6 / 256),
              "static_cap_fine": 0.85},
}


def testbed_specprune_config(changes=None):
    """SpecPruneConfig used on the testbed, with ``changes`` applied: an ``OPERATING_POINTS`` name, a dict
    or its JSON text. Action units are LIBERO-like normalised deltas (transport |a_xyz| ~ 1, fine
    phases <= 0.3), so the paper's controller thresholds apply as is."""
    from foretell.specprune.config import SpecPruneConfig

    if isinstance(changes, str) and not changes.lstrip().startswith("{"):
        if changes not in OPERATING_POINTS:
            raise ForetellError(f"unknown operating point {changes!r}; accepted: {', '.join(OPERATING_POINTS)} "
                                "or SpecPruneConfig changes as a JSON object")
        changes = OPERATING_POINTS[changes]
    return SpecPruneConfig().with_changes(changes)


@dataclass
class EvalConfig:
    """What an evaluation run does."""

    episodes: int = 100
    seed: int = 0
    methods: tuple = ()
    quick: bool = False
    weights: str | None = None
    threads: int = 1
    horizon: int = 100
    calibration_episodes: int = CALIBRATION_EPISODES
    baselines: bool = True
    specprune: dict | str | None = None  # OPERATING_POINTS name or SpecPruneConfig changes (testbed_specprune_config)
    extra: dict = field(default_factory=dict)
    device: str = "cpu"  # where the policy runs: cpu, cuda, cuda:N or mps (checked to exist)
    cuda_graphs: bool = False  # every method replays runs of plain layers from CUDA graphs (cuda only)

    def check(self) -> None:
        from foretell.core.device import resolve_device
        from foretell.specprune.methods import ALL_METHOD_NAMES, METHOD_NAMES

        self.device = str(resolve_device(self.device))
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise ForetellError(f"--cuda-graphs needs --device cuda (CUDA graphs are a GPU feature), got --device {self.device}")
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise ForetellError(f"--episodes must be a positive integer, got {self.episodes!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ForetellError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if not self.methods:
            self.methods = tuple(METHOD_NAMES)
        bad = [m for m in self.methods if m not in ALL_METHOD_NAMES]
        if bad:
            raise ForetellError(f"unknown method(s) {bad}; accepted: {', '.join(ALL_METHOD_NAMES)}")
        if len(set(self.methods)) != len(self.methods):
            raise ForetellError(f"methods {list(self.methods)} contain duplicates")
        from foretell.specprune.methods import PEERS

        if self.specprune is not None and not any(m.startswith("specprune") or m in PEERS for m in self.methods):
            raise ForetellError(f"--specprune-config sets the specprune variants and the peers' token budget, but "
                                f"--methods {','.join(self.methods)} has neither; drop it or add such a method")
        if self.threads < 1 or self.horizon < 1:
            raise ForetellError("--threads and the horizon must be positive integers")


def parse_methods(text: str | None) -> tuple:
    """``"a,b"`` -> ("a", "b"); None -> () (all methods); a text that names no method is an error."""
    if text is None:
        return ()
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    if not methods:
        raise ForetellError(f"--methods {text!r} lists no method; give a comma-separated list such as full,specprune")
    return methods


def image_tensors(images: dict, zero: bool = False) -> dict:
    """uint8 [H, W, 3] views -> float [1, 3, H, W] tensors in [0, 1] (all zeros when ``zero``)."""
    import torch

    out = {}
    for name, im in images.items():
        t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        out[name] = torch.zeros_like(t) if zero else t
    return out


class EpisodeRunner:
    """Runs closed-loop episodes of the VLA (optionally under a pruning handle) on the testbed."""

    def __init__(self, vla, tokenizer, image_size: int, horizon: int):
        from foretell.specprune.sim import TabletopEnv
        from foretell.specprune.train import INSTRUCTION_LEN

        self.vla, self.tok = vla, tokenizer
        self.env = TabletopEnv(image_size=image_size, horizon=horizon)
        self.instruction_len = INSTRUCTION_LEN

    def run(self, layout, handle=None, blind: bool = False, on_frame=None, on_step=None) -> dict:
        """One episode; returns success, steps, queries, re-queries and per-query e2e seconds.

        ``on_frame(obs, handle)`` is called after each policy query, ``on_step(obs, state)`` before
        every environment step with the observation and simulator state the action is taken in
        (DAgger records the visited states through it)."""
        import torch

        obs = self.env.reset(layout)
        ids = self.tok.encode_batch([layout.instruction], length=self.instruction_len)
        if handle is not None:
            handle.reset_state()
        queue: list = []
        e2e, queries, requeries, done, success = [], 0, 0, False, False
        while not done:
            if on_step is not None:
                on_step(obs, self.env.state)
            forced = handle is not None and handle.requery_needed
            if not queue or forced:
                requeries += int(forced and bool(queue))
                images = image_tensors(obs["images"], zero=blind)
                prop = torch.from_numpy(obs["proprio"]).unsqueeze(0)
                t0 = time.perf_counter()
                predict = handle.predict_action if handle is not None else self.vla.predict_action
                acts = predict(images, ids, prop)
                if acts.is_cuda:  # the GPU runs asynchronously: wait for the actions before reading the clock
                    torch.cuda.synchronize(acts.device)
                e2e.append(time.perf_counter() - t0)
                queries += 1
                queue = [a for a in acts[0].cpu().numpy().astype(np.float64)]
                if on_frame is not None:
                    on_frame(obs, handle)
            action = queue.pop(0)
            obs, done, success = self.env.step(action)
            if handle is not None:
                handle.observe(image_tensors(obs["images"], zero=blind), torch.from_numpy(action).float(),
                               queue_empty=not queue)
        return {"success": bool(success), "steps": self.env.state.step, "queries": queries,
                "requeries": requeries, "e2e_seconds": e2e}


def random_policy_success(layouts, horizon: int, seed: int) -> float:
    """Success rate of uniformly random actions on ``layouts`` (seeded)."""
    from foretell.specprune.sim import initial_state, transition

    rng = np.random.default_rng([seed, 99])
    wins = 0
    for layout in layouts:
        state = initial_state(layout)
        while not state.done:
            transition(state, rng.uniform(-1, 1, size=7), horizon)
        wins += int(state.success)
    return wins / len(layouts)


def expert_success(layouts, horizon: int) -> float:
    """Success rate of the scripted expert on ``layouts``."""
    from foretell.specprune.sim import expert_action, initial_state, transition

    wins = 0
    for layout in layouts:
        state = initial_state(layout)
        while not state.done:
            transition(state, expert_action(state), horizon)
        wins += int(state.success)
    return wins / len(layouts)


def summarize(episodes: list, stats: dict) -> dict:
    """One method's report entry from its episode results (``EpisodeRunner.run``) and handle statistics."""
    succ = [e["success"] for e in episodes]
    p = statistics.fmean(succ)
    e2e = [s for e in episodes for s in e["e2e_seconds"]]
    llm = stats.get("llm_seconds") or []
    return {
        "success_rate": p,
        "llm_latency_ms": statistics.median(llm) * 1000 if llm else None,
        "e2e_latency_ms": statistics.median(e2e) * 1000 if e2e else None,
        "visual_tokens_kept": stats.get("visual_tokens_kept"),
        "llm_macs_fraction": stats.get("llm_macs_fraction"),
        "success_std_error": math.sqrt(p * (1 - p) / len(succ)),
        "episodes": len(succ),
        "successes": int(sum(succ)),
        "queries": stats.get("queries"),
        "requeries": sum(e["requeries"] for e in episodes),
        "mean_steps": statistics.fmean(e["steps"] for e in episodes),
        "visual_tokens_total": stats.get("visual_tokens_total"),
        "visual_tokens_layer_mean": stats.get("visual_tokens_layer_mean"),
        "mode_fraction_fine": stats.get("mode_fraction_fine"),
        "llm_latency_ms_mean": statistics.fmean(llm) * 1000 if llm else None,
        "per_episode_success": "".join("1" if s else "0" for s in succ),
        "cuda_graphs": stats.get("cuda_graphs"),  # eager / capture / replay counts with --cuda-graphs, else None
    }


def screening_parser(doc: str, episodes: int, json_help: str = "output JSON path"):
    """argparse parser of a screening script: ``--weights``, ``--seed`` (screening layouts, not 0),
    ``--episodes`` (default ``episodes``) and ``--json``; the script adds its own flags."""
    import argparse

    from foretell.core.argtypes import int_at_least, seed_int

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--weights", default=None, help="weights directory (default: the eval default)")
    p.add_argument("--seed", type=seed_int, default=7, help="screening layout seed (not 0: the held-out evaluation seed)")
    p.add_argument("--episodes", type=int_at_least(1), default=episodes, help="screening episodes per method or setting")
    p.add_argument("--json", required=True, help=json_help)
    return p


def screening_setup(weights, seed: int, episodes: int, horizon: int = 100):
    """Policy, episode runner and layouts for choosing settings (budgets, configs) on SCREENING layouts:
    seed 0 holds the held-out evaluation layouts, and choosing on them would be selection bias. Runs
    torch on one thread (the tiny policy is fastest there, and the timings stay comparable)."""
    from foretell.specprune.sim import sample_layout
    from foretell.specprune.train import load_policy

    if seed == 0:
        raise ForetellError("--seed 0 holds the evaluation layouts; screen on another seed")
    import torch

    torch.set_num_threads(1)
    vla, tok = load_policy(weights)
    runner = EpisodeRunner(vla, tok, vla.config.image_size, horizon)
    return vla, runner, [sample_layout(seed, i) for i in range(episodes)]


def run_layouts(runner: EpisodeRunner, layouts: list, handle, desc: str) -> tuple[list, dict]:
    """Run one (removed) handle closed loop on every layout: the episode results and ``summarize`` of them."""
    from foretell.core.progress import progress

    episodes = [runner.run(layout, handle) for layout in progress(layouts, desc=desc)]
    return episodes, summarize(episodes, handle.stats())


def paired_counts(methods: dict, reference: str = "specprune") -> dict | None:
    """Per method: layouts solved by ``reference`` but not by it (``reference_only``) and vice versa
    (``method_only``), from the per-episode success strings of the same layouts, and the exact two-sided
    sign test (McNemar) on those discordant layouts (``sign_test_p``; 1.0 when there are none);
    None without the reference."""
    from scipy.stats import binomtest

    ref = (methods.get(reference) or {}).get("per_episode_success")
    if ref is None:
        return None
    out = {}
    for m, r in methods.items():
        other = r.get("per_episode_success")
        if m == reference or other is None or len(other) != len(ref):
            continue
        ref_only = sum(a == "1" and b == "0" for a, b in zip(ref, other))
        method_only = sum(a == "0" and b == "1" for a, b in zip(ref, other))
        p = binomtest(ref_only, ref_only + method_only).pvalue if ref_only + method_only else 1.0
        out[m] = {"reference_only": ref_only, "method_only": method_only, "sign_test_p": float(p)}
    return out


def evaluate(cfg: EvalConfig, log=print) -> dict:
    """Run the closed-loop comparison; returns the report dict (see module docstring)."""
    import torch

    cfg.check()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        return _evaluate(cfg, log)
    finally:
        torch.set_num_threads(prev_threads)


def _evaluate(cfg: EvalConfig, log) -> dict:
    from foretell.core.progress import progress
    from foretell.core.seed import seed_everything
    from foretell.specprune.methods import PEERS, build_method
    from foretell.specprune.sim import sample_layout
    from foretell.specprune.train import load_policy, training_info

    seed_everything(cfg.seed)
    n = min(cfg.episodes, QUICK_EPISODES) if cfg.quick else cfg.episodes
    horizon = min(cfg.horizon, QUICK_HORIZON) if cfg.quick else cfg.horizon
    vla, tok = load_policy(cfg.weights)
    vla = vla.to(cfg.device)
    runner = EpisodeRunner(vla, tok, vla.config.image_size, horizon)
    layouts = [sample_layout(cfg.seed, i) for i in range(n)]
    # the kept-count rounding that graphs bring must also hold while the peers' budget is calibrated
    spc = testbed_specprune_config(cfg.specprune)
    spc = spc.for_graphs(cfg.cuda_graphs or spc.cuda_graphs)
    t_start = time.perf_counter()

    budget, calib = None, None
    if any(m in PEERS for m in cfg.methods):
        k = max(1, min(cfg.calibration_episodes, n))
        h = build_method("specprune", vla, seed=cfg.seed, config=spc)
        h.remove()
        for layout in progress(layouts[:k], desc="calibrating token budget"):
            runner.run(layout, h)
        calib = h.stats()
        budget = max(1, int(round(calib["visual_tokens_kept"])))
        log(f"token budget for peers: {budget} of {calib['visual_tokens_total']} visual tokens "
            f"(specprune mean over {k} calibration episodes)")

    handles = {}
    for m in cfg.methods:
        handles[m] = build_method(m, vla, token_budget=budget if m in PEERS else None, seed=cfg.seed,
                                  config=spc if m.startswith("specprune") else None, cuda_graphs=cfg.cuda_graphs or None)
        # A removed handle keeps its state and statistics, and its predict_action is exactly what
        # vla.predict_action calls while it is applied; calling it directly lets all methods
        # alternate episode by episode without re-applying.
        handles[m].remove()
    results = {m: [] for m in cfg.methods}
    for i in progress(range(n), desc=f"episodes x {len(cfg.methods)} methods"):
        order = list(cfg.methods[i % len(cfg.methods):]) + list(cfg.methods[:i % len(cfg.methods)])
        for m in order:
            results[m].append(runner.run(layouts[i], handles[m]))
    methods = {}
    for m in cfg.methods:
        methods[m] = summarize(results[m], handles[m].stats())
    report = {"episodes": n, "seed": cfg.seed, "methods": methods}
    full = methods.get("full")
    if full and full["llm_latency_ms"]:
        report["speedup_vs_full"] = {
            m: {"llm_latency": full["llm_latency_ms"] / r["llm_latency_ms"] if r["llm_latency_ms"] else None,
                "e2e_latency": full["e2e_latency_ms"] / r["e2e_latency_ms"] if r["e2e_latency_ms"] else None,
                "llm_macs": 1.0 / r["llm_macs_fraction"] if r["llm_macs_fraction"] else None,
                "success_points": 100 * (r["success_rate"] - full["success_rate"])}
            for m, r in methods.items()}
    paired = paired_counts(methods)
    if paired is not None:
        report["paired_vs_specprune"] = paired
    report["token_budget"] = budget
    report["token_budget_calibration"] = (None if calib is None else
                                          {"episodes": max(1, min(cfg.calibration_episodes, n)),
                                           "visual_tokens_kept": calib["visual_tokens_kept"],
                                           "llm_macs_fraction": calib["llm_macs_fraction"]})
    if cfg.baselines:
        blind = [runner.run(layout, None, blind=True) for layout in progress(layouts, desc="blind policy")]
        report["baselines"] = {
            "blind": {"success_rate": statistics.fmean(e["success"] for e in blind),
                      "note": "full model with both camera images zeroed"},
            "random_actions": {"success_rate": random_policy_success(layouts, horizon, cfg.seed),
                               "note": "uniform random actions in [-1, 1]^7"},
            "expert": {"success_rate": expert_success(layouts, horizon), "note": "scripted expert (upper bound)"},
        }
    report["config"] = {"eval": {k: v for k, v in asdict(cfg).items() if k != "extra"} | {"episodes_run": n,
                                                                                          "horizon_run": horizon},
                        "specprune": asdict(spc), "vla": asdict(vla.config),
                        "training": training_info(cfg.weights).get("train_config")}
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["quick"] = cfg.quick
    return report


def results_rows(report: dict) -> tuple[list, list]:
    """Headers and rows of the results table (one row per method). With SpecPrune among the methods,
    a last column pairs each method with it: layouts only SpecPrune solves / only the method solves,
    and the sign test's p on them."""
    headers = ["method", "success", "LLM ms", "e2e ms", "visual tokens", "LLM MACs", "LLM speed-up"]
    paired = report.get("paired_vs_specprune")
    if paired is not None:
        headers.append("solved by specprune only / this only (p)")
    rows = []
    sp = report.get("speedup_vs_full", {})
    for m, r in report["methods"].items():
        row = [m, f"{r['success_rate']:.2f} ({r['successes']}/{r['episodes']})", r["llm_latency_ms"],
               r["e2e_latency_ms"], r["visual_tokens_kept"], r["llm_macs_fraction"],
               (sp.get(m) or {}).get("llm_latency")]
        if paired is not None:
            pr = paired.get(m)
            row.append(None if pr is None else f"{pr['reference_only']} / {pr['method_only']}"
                       + (f" (p={pr['sign_test_p']:.2g})" if "sign_test_p" in pr else ""))
        rows.append(row)
    return headers, rows


def write_report(report: dict, json_path: Path, md_path: Path | None = None) -> None:
    """Write the JSON report (atomic) and, optionally, a Markdown table next to it."""
    from foretell.core.report import markdown_table, write_json, write_text

    write_json(json_path, report)
    if md_path is not None:
        headers, rows = results_rows(report)
        text = f"# SpecPrune-VLA closed-loop evaluation ({report['episodes']} episodes, seed {report['seed']})\n\n"
        text += markdown_table(headers, rows, digits=3)
        if "baselines" in report:
            b = report["baselines"]
            text += "\n" + ", ".join(f"{k}: {v['success_rate']:.2f}" for k, v in b.items()) + "\n"
        write_text(md_path, text)
