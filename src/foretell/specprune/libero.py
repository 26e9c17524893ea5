"""LIBERO evaluation of SpecPrune-VLA on a real OpenVLA-OFT checkpoint (GPU users).

Needs the optional extra ``pip install 'foretell[specprune-libero]'`` plus two packages that are
not on PyPI: LIBERO (https://github.com/Lifelong-Robot-Learning/LIBERO) and the OpenVLA-OFT repo
(https://github.com/moojink/openvla-oft, installed with ``pip install -e .``; it provides the
``prismatic`` and ``experiments.robot`` modules), and an OFT checkpoint directory or hub id, e.g.
``moojink/openvla-7b-oft-finetuned-libero-spatial``. The pruning engine needs transformers >= 4.48
(decoder layers taking ``position_embeddings``); OFT pins a 4.40 fork, so run OFT's modules with
a newer transformers (untested here). Usage::

    from foretell.specprune.libero import run_libero_eval
    run_libero_eval("moojink/openvla-7b-oft-finetuned-libero-spatial", task_suite="libero_spatial",
                    methods=("full", "specprune"), trials_per_task=50, json_path="libero.json")

Each method runs the same episodes (same initial states); the report has, per method,
``success_rate``, ``llm_latency_ms`` (median backbone seconds per query), ``e2e_latency_ms``
(median ``predict_action`` call incl. vision and action head), ``visual_tokens_kept`` and
``llm_macs_fraction``. This entry point is not exercised on the CPU-only machines of this project.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from foretell.core.errors import ForetellError

TASK_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


def _require():
    try:
        from libero.libero import benchmark  # noqa: F401
        from experiments.robot import openvla_utils, robot_utils  # noqa: F401
        from experiments.robot.libero import libero_utils  # noqa: F401
        import prismatic  # noqa: F401
    except ImportError as exc:
        raise ForetellError(f"LIBERO evaluation needs the LIBERO and OpenVLA-OFT packages ({exc.name} is missing); "
                            "install foretell[specprune-libero], LIBERO and openvla-oft (pip install -e) first") from exc


@dataclass
class _OFTConfig:
    """The fields OFT's loading helpers read (mirrors their GenerateConfig)."""

    pretrained_checkpoint: str
    task_suite_name: str
    model_family: str = "openvla"
    use_l1_regression: bool = True
    use_diffusion: bool = False
    use_film: bool = False
    num_images_in_input: int = 2
    use_proprio: bool = True
    center_crop: bool = True
    num_open_loop_steps: int = 8
    unnorm_key: str = ""
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    num_diffusion_steps: int = 50


def _adapter_class():
    from foretell.specprune.adapter import PrismaticOFTAdapter

    class LiberoOFTAdapter(PrismaticOFTAdapter):
        """Uses the OFT processor's pixel values of the current step; raw frames drive the frame difference."""

        pixel_values = None

        def _pixels(self, images):
            return self.pixel_values

    return LiberoOFTAdapter


def run_libero_eval(checkpoint: str, *, task_suite: str = "libero_spatial", methods=("full", "specprune"),
                    trials_per_task: int = 50, max_tasks: int | None = None, seed: int = 7, config=None,
                    token_budget: int | None = None, json_path=None, num_steps_wait: int = 10,
                    cuda_graphs: bool = False) -> dict:
    """Closed-loop LIBERO evaluation of ``methods`` on one OFT checkpoint; returns (and writes) the report.
    ``cuda_graphs``: every method replays its runs of plain decoder layers from CUDA graphs (the fast
    path on a GPU, see docs/specprune.md)."""
    from foretell.specprune.methods import ALL_METHOD_NAMES

    if task_suite not in TASK_MAX_STEPS:
        raise ForetellError(f"unknown task suite {task_suite!r}; accepted: {', '.join(TASK_MAX_STEPS)}")
    bad = [m for m in methods if m not in ALL_METHOD_NAMES]
    if bad:
        raise ForetellError(f"unknown method(s) {bad}; accepted: {', '.join(ALL_METHOD_NAMES)}")
    _require()
    import numpy as np
    import torch
    from libero.libero import benchmark
    from experiments.robot.libero.libero_utils import (get_libero_dummy_action, get_libero_env, get_libero_image,
                                                      get_libero_wrist_image, quat2axisangle)
    from experiments.robot.openvla_utils import (get_action_head, get_processor, get_proprio_projector,
                                                 normalize_proprio, prepare_images_for_vla, resize_image_for_policy)
    from experiments.robot.robot_utils import get_model, invert_gripper_action, normalize_gripper_action
    from prismatic.vla.constants import ACTION_DIM, NUM_ACTIONS_CHUNK

    from foretell.core.report import write_json
    from foretell.core.seed import seed_everything
    from foretell.specprune.methods import build_method

    seed_everything(seed)
    cfg = _OFTConfig(pretrained_checkpoint=checkpoint, task_suite_name=task_suite)
    vla = get_model(cfg)
    processor = get_processor(cfg)
    cfg.unnorm_key = task_suite if task_suite in vla.norm_stats else f"{task_suite}_no_noops"
    action_head = get_action_head(cfg, vla.llm_dim)
    proprio_projector = get_proprio_projector(cfg, vla.llm_dim, proprio_dim=8)
    image_size = 224
    adapter = _adapter_class()(vla, action_head, views=("third", "wrist"), image_size=image_size, patch_size=14,
                               chunk=NUM_ACTIONS_CHUNK, action_dim=ACTION_DIM, proprio_projector=proprio_projector,
                               instruction_skip=10)
    device = next(vla.parameters()).device
    suite = benchmark.get_benchmark_dict()[task_suite]()
    n_tasks = suite.n_tasks if max_tasks is None else min(max_tasks, suite.n_tasks)
    report = {"episodes": 0, "task_suite": task_suite, "checkpoint": str(checkpoint), "seed": seed, "methods": {}}

    for name in methods:
        handle = build_method(name, vla, token_budget=token_budget, seed=seed, config=config, adapter=adapter,
                              cuda_graphs=cuda_graphs or None)
        successes, episodes, e2e = 0, 0, []
        for task_id in range(n_tasks):
            task = suite.get_task(task_id)
            init_states = suite.get_task_init_states(task_id)
            env, description = get_libero_env(task, cfg.model_family, resolution=256)
            prompt = f"In: What action should the robot take to {description.lower()}?\nOut:"
            for trial in range(trials_per_task):
                env.reset()
                obs = env.set_init_state(init_states[trial % len(init_states)])
                handle.reset_state()
                queue, done = [], False
                for t in range(TASK_MAX_STEPS[task_suite] + num_steps_wait):
                    if t < num_steps_wait:
                        obs, _, done, _ = env.step(get_libero_dummy_action(cfg.model_family))
                        continue
                    third = resize_image_for_policy(get_libero_image(obs), image_size)
                    wrist = resize_image_for_policy(get_libero_wrist_image(obs), image_size)
                    frames = {v: torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float().div(255).to(device)
                              for v, im in (("third", third), ("wrist", wrist))}
                    if not queue or handle.requery_needed:
                        pil = prepare_images_for_vla([third, wrist], cfg)
                        inputs = processor(prompt, pil[0]).to(device, dtype=torch.bfloat16)
                        wrist_px = processor(prompt, pil[1]).to(device, dtype=torch.bfloat16)["pixel_values"]
                        adapter.pixel_values = torch.cat([inputs["pixel_values"], wrist_px], dim=1)
                        ids = inputs["input_ids"]
                        if not torch.all(ids[:, -1] == 29871):  # OFT appends the empty token before actions
                            ids = torch.cat([ids, torch.tensor([[29871]], device=ids.device)], dim=1)
                        ids, _ = vla._prepare_input_for_action_prediction(ids, torch.ones_like(ids))
                        state = np.concatenate((obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]))
                        proprio = torch.as_tensor(normalize_proprio(state, vla.norm_stats[cfg.unnorm_key]["proprio"]),
                                                  device=device, dtype=torch.bfloat16)[None]
                        t0 = time.perf_counter()
                        normalized = vla.predict_action(frames, ids.long(), proprio)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        e2e.append(time.perf_counter() - t0)
                        queue = list(vla._unnormalize_actions(normalized[0].float().cpu().numpy(), cfg.unnorm_key))
                    action = queue.pop(0)
                    env_action = invert_gripper_action(normalize_gripper_action(np.array(action), binarize=True))
                    obs, _, done, _ = env.step(env_action.tolist())
                    handle.observe(frames, torch.as_tensor(np.array(action), dtype=torch.float32), queue_empty=not queue)
                    if done:
                        break
                successes += int(done)
                episodes += 1
        st = handle.stats()
        handle.remove()
        report["episodes"] = episodes
        report["methods"][name] = {
            "success_rate": successes / max(episodes, 1),
            "llm_latency_ms": 1000 * st["llm_seconds_median"] if st["queries"] else None,
            "e2e_latency_ms": 1000 * statistics.median(e2e) if e2e else None,
            "visual_tokens_kept": st["visual_tokens_kept"],
            "llm_macs_fraction": st["llm_macs_fraction"],
            "mode_fraction_fine": st["mode_fraction_fine"],
        }
    if json_path is not None:
        write_json(json_path, report)
    return report
