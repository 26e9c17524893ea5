"""Engine-level benchmark: replay scripted-expert episodes through every method on the same frames.

The closed-loop evaluation (``foretell specprune eval``) measures success; this replay isolates
the backbone: every method sees exactly the same observations and executed actions (the expert's),
queries every ``chunk`` steps or when its controller asks for a re-query, and reports per method
the median backbone wall and calling-thread CPU milliseconds (speed-ups against ``full`` from the
same run, methods interleaved), the visual tokens kept and the LLM MACs fraction.

    python -m foretell.specprune.replay --weights DIR --episodes 4 --repeats 3 --budget 100 --json OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from foretell.core.argtypes import int_at_least, seed_int, threads_int
from foretell.core.errors import ForetellError

VARIANTS = {  # name -> (registry method, SpecPruneConfig changes or None)
    "full": ("full", None),
    "specprune": ("specprune", {}),
    "specprune_no_dynamic_layers": ("specprune", {"use_dynamic_layers": False}),
    "specprune_no_global": ("specprune_no_global", {}),
    "specprune_no_controller": ("specprune_no_controller", {}),
    "fastv": ("fastv", None),
    "vla_cache": ("vla_cache", None),
    "random": ("random", None),
}


def record_expert_episodes(env, tokenizer, instruction_len: int, episodes: int, seed: int) -> list:
    """[(instruction ids, [(images, proprio, executed action or None), ...]), ...] of expert rollouts."""
    import torch

    from foretell.specprune.eval import image_tensors
    from foretell.specprune.sim import expert_action, sample_layout

    out = []
    for i in range(episodes):
        layout = sample_layout(seed, i)
        obs = env.reset(layout)
        steps = [(image_tensors(obs["images"]), torch.from_numpy(obs["proprio"]).unsqueeze(0), None)]
        done = False
        while not done:
            action = expert_action(env.state)
            obs, done, _ = env.step(action)
            steps.append((image_tensors(obs["images"]), torch.from_numpy(obs["proprio"]).unsqueeze(0),
                          torch.from_numpy(action).float()))
        out.append((tokenizer.encode_batch([layout.instruction], length=instruction_len), steps))
    return out


def replay_benchmark(weights=None, *, episodes: int = 4, repeats: int = 3, seed: int = 5, budget: int | None = None,
                     methods=tuple(VARIANTS), threads: int = 1, config=None) -> dict:
    """Run the replay; returns the report dict (see the module docstring). ``config``: an operating
    point name of ``foretell.specprune.eval.OPERATING_POINTS`` or SpecPruneConfig changes (dict or JSON
    text) for every specprune variant."""
    import torch

    from foretell.specprune.eval import testbed_specprune_config
    from foretell.specprune.methods import PEERS, build_method
    from foretell.specprune.sim import TabletopEnv
    from foretell.specprune.train import INSTRUCTION_LEN, load_policy

    bad = [m for m in methods if m not in VARIANTS]
    if bad:
        raise ForetellError(f"unknown method(s) {bad}; accepted: {', '.join(VARIANTS)}")
    if methods[0] != "full":
        raise ForetellError("the first method must be 'full' (the baseline of the speed-ups)")
    if episodes < 1 or repeats < 1 or threads < 1:
        raise ForetellError("--episodes, --repeats and --threads must be positive integers")
    torch.set_num_threads(threads)
    vla, tok = load_policy(weights)
    env = TabletopEnv(image_size=vla.config.image_size, horizon=100)
    recorded = record_expert_episodes(env, tok, INSTRUCTION_LEN, episodes, seed)
    sp_cfg = testbed_specprune_config(config)
    handles = {}
    for name in methods:
        method, changes = VARIANTS[name]
        cfg = sp_cfg.replace(**changes) if changes is not None else None
        h = build_method(method, vla, token_budget=budget if method in PEERS else None, seed=seed, config=cfg)
        h.remove()  # queried through h.predict_action, so the methods can alternate
        handles[name] = h
    chunk = vla.config.chunk
    for _ in range(repeats):
        for ids, steps in recorded:
            for name in methods:
                h = handles[name]
                h.reset_state()
                for t, (images, proprio, action) in enumerate(steps):
                    if action is not None:
                        h.observe(images, action)
                    if t % chunk == 0 or h.requery_needed:
                        h.predict_action(images, ids, proprio)
    base = handles[methods[0]].stats()
    base_cpu, base_wall = statistics.median(base["llm_cpu_seconds"]), statistics.median(base["llm_seconds"])
    report = {"episodes": episodes, "repeats": repeats, "seed": seed, "token_budget_peers": budget, "threads": threads,
              "specprune_config": dataclasses.asdict(sp_cfg),
              "weights": str(weights) if weights is not None else "shipped", "methods": {}}
    for name in methods:
        s = handles[name].stats()
        cpu, wall = statistics.median(s["llm_cpu_seconds"]), statistics.median(s["llm_seconds"])
        report["methods"][name] = {
            "llm_cpu_ms": 1000 * cpu, "llm_cpu_speedup": base_cpu / cpu,
            "llm_latency_ms": 1000 * wall, "llm_speedup": base_wall / wall,
            "visual_tokens_kept": s["visual_tokens_kept"], "visual_tokens_layer_mean": s["visual_tokens_layer_mean"],
            "llm_macs_fraction": s["llm_macs_fraction"], "mode_fraction_fine": s["mode_fraction_fine"],
            "queries": s["queries"],
        }
    return report


def main(argv=None) -> int:
    """Command-line entry point (``python -m foretell.specprune.replay``)."""
    from foretell.core.report import write_json

    p = argparse.ArgumentParser(prog="python -m foretell.specprune.replay", description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="weights directory (default: the shipped testbed VLA)")
    p.add_argument("--episodes", type=int_at_least(1), default=4, help="expert episodes to replay")
    p.add_argument("--repeats", type=int_at_least(1), default=3, help="passes over the episodes (methods interleaved)")
    p.add_argument("--seed", type=seed_int, default=5, help="layout seed of the replayed episodes")
    p.add_argument("--budget", type=int_at_least(1), default=None, help="visual tokens kept by the peers (default: registry default)")
    p.add_argument("--methods", default=",".join(VARIANTS), help="comma-separated, first must be full")
    p.add_argument("--threads", type=threads_int(1), default=1, help="torch threads")
    p.add_argument("--config", default=None, metavar="JSON",
                   help="operating point of the specprune variants: a name (paper, tight) or SpecPruneConfig "
                        "changes as a JSON object (default: paper)")
    p.add_argument("--json", required=True, help="output JSON path")
    args = p.parse_args(argv)
    try:
        report = replay_benchmark(args.weights, episodes=args.episodes, repeats=args.repeats, seed=args.seed,
                                  budget=args.budget, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                                  threads=args.threads, config=args.config)
    except ForetellError as exc:
        p.exit(2, f"foretell: error: {exc}\n")
    write_json(args.json, report)
    for name, row in report["methods"].items():
        print(f"{name:28s} cpu {row['llm_cpu_ms']:6.2f} ms x{row['llm_cpu_speedup']:.2f}  wall {row['llm_latency_ms']:6.2f} ms "
              f"x{row['llm_speedup']:.2f}  kept {row['visual_tokens_kept']:6.1f}  macs {row['llm_macs_fraction']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
