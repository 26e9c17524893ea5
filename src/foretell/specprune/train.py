"""Behaviour cloning of the small OFT-style VLA on the scripted expert's demonstrations.

Deterministic: demonstrations come from seeded layouts (training layouts use seeds
``TRAIN_SEED_BASE + seed``, disjoint from the evaluation seeds 0..999), the executed actions are
the expert's plus seeded Gaussian noise (DART-style, so the data covers recoveries) while the
labels are always the clean expert chunk, and batches are drawn by a seeded ``torch.Generator``.
The default objective is the squared error over the 8-step action chunk: with OFT's L1 objective
(``vla.loss``, selectable with ``loss="l1"``) the small from-scratch model stayed at the per-dimension
median action for the first 500 steps of our budget, while MSE starts using the inputs after ~150
steps (docs/specprune.md).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from foretell.core.errors import ForetellError

TRAIN_SEED_BASE = 1000
INSTRUCTION_LEN = 12        # longest template; every instruction is right-padded to this length
ASSET_DIR = Path(__file__).resolve().parent / "assets" / "vla"
# The policy loaded when no weights are given: the 96 px one (144 patches per view), where the
# issue's speed targets hold; ASSET_DIR stays the output of the default training command.
DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "assets" / "vla_96px"
TOKENIZER_NAME = "tokenizer.json"


@dataclass
class TrainConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    episodes: int = 300
    noise_max: float = 0.25          # per-episode noise std ~ U(0, noise_max) on the executed xyz/yaw
    clean_fraction: float = 0.25     # episodes executed without noise
    steps: int = 2400
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    threads: int = 1
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 96
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_dim: int = 64
    action_head_hidden: int = 256
    chunk: int = 8
    horizon: int = 100
    checkpoint_every: int = 0        # also write the weights every N steps (0: only at the end)
    loss: str = "mse"                # "mse" or "l1" (OFT's objective, vla.loss); see docs/specprune.md
    fan_in_init: bool = True         # re-initialise the backbone for faster attention learning (see reinit_for_training)
    slot_init_std: float = 0.05      # std of the action-slot embeddings at the fan-in re-initialisation
    coord_embed: bool = True         # learned linear (x, y) patch-centre embedding on the visual tokens
    stem: str = "conv"               # vision stem of the VLA ("conv": overlapping 3x3 convs + coordinates; "patch")
    film: bool = True                # OFT+-style FiLM conditioning of the vision stem on the instruction
    action_weight: float = 5.0       # weight of the behaviour-cloning (action chunk) loss
    aux_seg: float = 1.0             # weight of the training-only target-segmentation loss (bc_aux; 0 = off)
    aux_attn: float = 1.0            # weight of the training-only action-slot attention loss (bc_aux; 0 = off)
    aux_attn_layers: str = "0,1"     # layers whose action-slot attention (heads 0-2) is pulled to block / pad / proprio
    aux_rel: float = 1.0             # weight of the training-only relative-position loss (bc_aux; 0 = off)
    dagger_at: str = "800,1400,2000" # comma-separated steps after which on-policy data is added (DAgger)
    dagger_episodes: int = 100       # policy episodes relabelled by the expert per DAgger round
    warm_start_size: int = 0         # progressive resizing: train the first warm_start_steps at this image size (0 = off)
    warm_start_steps: int = 0        # steps at warm_start_size before the model, data and optimizer move to image_size

    def check(self) -> None:
        for name in ("episodes", "steps", "batch_size", "threads", "image_size", "chunk", "horizon"):
            if int(getattr(self, name)) < 1:
                raise ForetellError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.loss not in ("l1", "mse"):
            raise ForetellError(f"loss={self.loss!r} is not supported; accepted: l1, mse")
        if not 0.0 <= self.clean_fraction <= 1.0 or self.noise_max < 0:
            raise ForetellError("clean_fraction must be in [0, 1] and noise_max >= 0")
        if self.aux_seg < 0 or self.aux_rel < 0:
            raise ForetellError("aux_seg and aux_rel are loss weights and must be >= 0")
        try:
            self.dagger_steps()
        except ValueError:
            raise ForetellError(f"dagger_at={self.dagger_at!r} must be comma-separated step numbers, e.g. '600,900'") from None
        if self.warm_start_size:
            if self.warm_start_size < 0 or self.warm_start_size % self.patch_size or self.warm_start_size == self.image_size:
                raise ForetellError(f"warm_start_size={self.warm_start_size} must be 0 (off) or a multiple of patch_size="
                                    f"{self.patch_size} different from image_size={self.image_size}, e.g. 64")
            if not 0 < self.warm_start_steps < self.steps:
                raise ForetellError(f"warm_start_steps={self.warm_start_steps} must be in [1, steps={self.steps}) "
                                    "when warm_start_size is set")

    def size_at(self, step: int) -> int:
        """The image size trained at ``step`` (progressive resizing: warm_start_size first)."""
        return self.warm_start_size if self.warm_start_size and step < self.warm_start_steps else self.image_size

    def dagger_steps(self) -> list:
        """The steps after which a DAgger round runs (sorted)."""
        return sorted(int(x) for x in str(self.dagger_at).split(",") if x.strip())


def vla_config(cfg: TrainConfig, vocab_size: int, image_size: int | None = None):
    """The :class:`VLAConfig` the testbed trains (sizes chosen for CPU training in minutes);
    ``image_size`` overrides ``cfg.image_size`` (the warm-start phase)."""
    from foretell.specprune.model import VLAConfig
    from foretell.specprune.sim import ACTION_DIM, PROPRIO_DIM

    return VLAConfig(image_size=image_size or cfg.image_size, patch_size=cfg.patch_size, views=("third", "wrist"),
                     hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                     num_kv_heads=cfg.num_kv_heads, intermediate_size=cfg.intermediate_size,
                     vocab_size=vocab_size, proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM, chunk=cfg.chunk,
                     vision_dim=cfg.vision_dim, action_head_hidden=cfg.action_head_hidden, stem=cfg.stem, film=cfg.film, coord_embed=cfg.coord_embed)


def make_tokenizer():
    """The word tokenizer over the task's closed vocabulary."""
    from foretell.specprune.sim import vocabulary
    from foretell.specprune.tokenizer import InstructionTokenizer

    return InstructionTokenizer(vocabulary())


_COLUMNS = ("third", "wrist", "proprio", "ids", "actions", "episode", "rel", "mask_third", "mask_wrist", "state")


def _record(cols: dict, state, views: dict, ids, episode: int, cfg: "TrainConfig", image_size: int) -> None:
    """Append one training sample: both views, proprio, instruction, the clean expert chunk (label),
    the training-only auxiliary targets (bc_aux) and a copy of the simulator state (re-rendering)."""
    from foretell.specprune.bc_aux import relative_target, target_masks
    from foretell.specprune.sim import expert_chunk, proprio

    cols["third"].append(views["third"])
    cols["wrist"].append(views["wrist"])
    cols["proprio"].append(proprio(state, cfg.horizon))
    cols["ids"].append(ids)
    cols["actions"].append(expert_chunk(state, cfg.chunk, cfg.horizon).astype(np.float32))
    cols["episode"].append(episode)
    cols["rel"].append(relative_target(state))
    masks = target_masks(state, image_size, cfg.patch_size)
    cols["mask_third"].append(masks["third"])
    cols["mask_wrist"].append(masks["wrist"])
    cols["state"].append(state.copy())


def _stack(cols: dict) -> dict:
    out = {k: np.stack(v) for k, v in cols.items() if k != "state"}
    states = np.empty(len(cols["state"]), dtype=object)
    states[:] = cols["state"]
    out["state"] = states
    return out


def rerender(data: dict, image_size: int, patch_size: int) -> dict:
    """``data`` with both views and the segmentation targets rendered again at ``image_size`` from
    the recorded simulator states (labels, proprio and the other targets do not depend on it)."""
    from foretell.core.progress import progress
    from foretell.specprune.bc_aux import target_masks
    from foretell.specprune.sim import render_views

    cols = {k: [] for k in ("third", "wrist", "mask_third", "mask_wrist")}
    for state in progress(data["state"], desc=f"render {image_size}px", total=len(data["state"])):
        views, masks = render_views(state, image_size), target_masks(state, image_size, patch_size)
        for v in ("third", "wrist"):
            cols[v].append(views[v])
            cols[f"mask_{v}"].append(masks[v])
    return {**data, **{k: np.stack(v) for k, v in cols.items()}}


def collect_demonstrations(cfg: TrainConfig, tokenizer, progress_desc: str = "demos", image_size: int | None = None) -> dict:
    """Roll out the expert (with seeded execution noise) and return stacked training arrays, images
    at ``image_size`` (default ``cfg.image_size``).

    Keys: ``third``/``wrist`` uint8 [N, H, W, 3], ``proprio`` float32 [N, 8], ``ids`` int64 [N, L],
    ``actions`` float32 [N, chunk, 7], ``episode`` int32 [N], the auxiliary targets ``rel``
    float32 [N, 5] and ``mask_third``/``mask_wrist`` float16 [N, 2, grid, grid], ``state`` (object
    array of :class:`SimState` copies); plus ``expert_success``.
    """
    from foretell.core.progress import progress
    from foretell.specprune.sim import expert_action, initial_state, render_views, sample_layout, transition

    size = image_size or cfg.image_size
    rng = np.random.default_rng([cfg.seed, 77])
    cols = {k: [] for k in _COLUMNS}
    successes = 0
    for ep in progress(range(cfg.episodes), desc=progress_desc):
        layout = sample_layout(TRAIN_SEED_BASE + cfg.seed, ep)
        ids = tokenizer.encode_batch([layout.instruction], length=INSTRUCTION_LEN)[0].numpy()
        sigma = 0.0 if rng.random() < cfg.clean_fraction else rng.uniform(0.0, cfg.noise_max)
        state = initial_state(layout)
        while not state.done:
            _record(cols, state, render_views(state, size), ids, ep, cfg, size)
            act = expert_action(state)
            if sigma > 0:
                noise = rng.normal(0.0, sigma, size=4)
                act[[0, 1, 2, 5]] += noise
            transition(state, act, cfg.horizon)
        successes += int(state.success)
    data = _stack(cols)
    data["expert_success"] = successes / cfg.episodes
    return data


def collect_on_policy(model, tokenizer, cfg: TrainConfig, first_episode: int, episodes: int) -> tuple[dict, float]:
    """DAgger: run the current policy closed loop with the evaluation's :class:`EpisodeRunner`
    (8-step chunks executed open loop) on fresh training layouts and label every visited state with
    the expert's chunk (the expert is a pure function of the state). Images at the model's own
    size. Returns (arrays, policy success rate)."""
    from foretell.core.progress import progress
    from foretell.specprune.eval import EpisodeRunner
    from foretell.specprune.sim import sample_layout

    cols = {k: [] for k in _COLUMNS}
    successes, size = 0, model.config.image_size
    runner = EpisodeRunner(model, tokenizer, size, cfg.horizon)
    model.eval()
    for ep in progress(range(first_episode, first_episode + episodes), desc="dagger"):
        layout = sample_layout(TRAIN_SEED_BASE + cfg.seed, ep)
        ids = tokenizer.encode_batch([layout.instruction], length=INSTRUCTION_LEN)[0].numpy()
        result = runner.run(layout, on_step=lambda obs, state: _record(cols, state, obs["images"], ids, ep, cfg, size))
        successes += int(result["success"])
    model.train()
    return _stack(cols), successes / max(1, episodes)


def reinit_for_training(model, slot_std: float = 1.0) -> None:
    """Give the from-scratch backbone a fan-in initialisation before training.

    transformers initialises Llama linears with std 0.02 (meant for pretrained-size models); at width
    96 that makes every attention map uniform, so the action slots see the proprio token and the
    target's patches with weight ~1/359 and learn to attend very slowly. PyTorch's default fan-in
    init for the backbone linears and unit-variance learned embeddings (action slots, BOS, STOP,
    words) start training with non-uniform attention (about 2x faster on a toy proprio-to-action
    probe).
    """
    import torch

    for mod in model.backbone.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.reset_parameters()
    with torch.no_grad():
        for p in (model.bos, model.stop, model.backbone.embed_tokens.weight):
            p.normal_(0.0, 1.0)
        model.action_slots.normal_(0.0, slot_std)


def to_model_inputs(third, wrist, ids, prop):
    """numpy uint8 images [B, H, W, 3] etc. -> the model's tensors (images float in [0, 1])."""
    import torch

    def img(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)

    return ({"third": img(third), "wrist": img(wrist)}, torch.as_tensor(ids, dtype=torch.long),
            torch.as_tensor(prop, dtype=torch.float32))


def train(cfg: TrainConfig, out_dir: Path = ASSET_DIR, log=print, data: dict | None = None) -> dict:
    """Collect demonstrations (or use ``data`` from :func:`collect_demonstrations` with the same
    ``cfg``), train the VLA by BC, save weights + tokenizer + training log."""
    import torch

    cfg.check()
    prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(int(cfg.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, Path(out_dir), log, data)
    finally:  # leave the process as we found it (tests run in one interpreter)
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1])


def _train(cfg: TrainConfig, out_dir: Path, log, data: dict | None) -> dict:
    import torch

    from foretell.core.seed import seed_everything
    from foretell.specprune.bc_aux import ROUTED_HEADS, AuxHeads, attention_target_loss, run_with_action_attention
    from foretell.specprune.model import OFTStyleVLA
    from foretell.specprune.resize import carry_optimizer_state, resized_vla

    seed_everything(cfg.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    tok = make_tokenizer()
    if data is None:
        data = collect_demonstrations(cfg, tok, image_size=cfg.size_at(0))
    n = len(data["actions"])
    log(f"demonstrations: {cfg.episodes} episodes, {n} samples, expert success {data['expert_success']:.3f}, "
        f"{time.perf_counter() - t0:.0f}s")
    t_data = time.perf_counter() - t0
    model = OFTStyleVLA(vla_config(cfg, tok.vocab_size, cfg.size_at(0))).train()
    if cfg.fan_in_init:
        reinit_for_training(model, cfg.slot_init_std)
    aux = AuxHeads(model.config.hidden_size)
    opt, named = _optimizer(model, aux, cfg)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    lay = model.layout(INSTRUCTION_LEN)
    attn_layers = tuple(int(x) for x in cfg.aux_attn_layers.split(",") if x.strip())
    losses, running, dagger_log, warm_log = [], None, [], None
    dagger_steps, next_layout = cfg.dagger_steps(), cfg.episodes
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).numpy()
        images, ids, prop = to_model_inputs(data["third"][idx], data["wrist"][idx], data["ids"][idx], data["proprio"][idx])
        target = torch.from_numpy(data["actions"][idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        embeds = model.embed_inputs(images, ids, prop)
        masks = {v: torch.from_numpy(data[f"mask_{v}"][idx].astype(np.float32)) for v in lay.views}
        if cfg.aux_attn > 0:
            hidden, maps = run_with_action_attention(model, embeds, lay, attn_layers, heads=ROUTED_HEADS)
            attn_loss = attention_target_loss(maps, lay, masks)
        else:
            hidden, attn_loss = model.run_backbone(embeds), embeds.new_zeros(())
        pred = model.action_head(hidden[:, lay.actions])
        act_loss = (pred - target).abs().mean() if cfg.loss == "l1" else (pred - target).pow(2).mean()
        seg_loss, rel_loss = aux.losses(embeds, hidden, lay, masks, torch.from_numpy(data["rel"][idx]))
        loss = cfg.action_weight * act_loss + cfg.aux_seg * seg_loss + cfg.aux_rel * rel_loss.mean() + cfg.aux_attn * attn_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rel_parts = rel_loss.detach()
        vals = (act_loss.item(), seg_loss.item(), rel_parts.mean().item(), rel_parts[:2].mean().item(),
                rel_parts[2].item(), rel_parts[3:].mean().item(), attn_loss.item())
        running = vals if running is None else tuple(0.98 * r + 0.02 * v for r, v in zip(running, vals))
        if step % 25 == 0 or step == cfg.steps - 1:
            losses.append({"step": step, "loss": round(running[0], 5), "seg": round(running[1], 5),
                           "rel": round(running[2], 5), "seconds": round(time.perf_counter() - t0, 1)})
            log(f"step {step}/{cfg.steps} action {running[0]:.4f} seg {running[1]:.4f} rel {running[2]:.4f} "
                f"(block {running[3]:.4f} yaw {running[4]:.4f} pad {running[5]:.4f}) attn {running[6]:.3f} "
                f"lr {lr_at(step):.2e} {time.perf_counter() - t0:.0f}s")
        if dagger_steps and step + 1 == dagger_steps[0]:
            dagger_steps.pop(0)
            new, rate = collect_on_policy(model, tok, cfg, next_layout, cfg.dagger_episodes)
            next_layout += cfg.dagger_episodes
            data = {k: (np.concatenate([data[k], new[k]]) if k in new else v) for k, v in data.items()}
            n = len(data["actions"])
            entry = {"step": step + 1, "policy_success_train_layouts": rate, "samples": n}
            if cfg.warm_start_size:
                entry["image_size"] = model.config.image_size
            dagger_log.append(entry)
            log(f"dagger after step {step + 1}: policy success {rate:.2f} on training layouts, {n} samples")
        if cfg.warm_start_size and step + 1 == cfg.warm_start_steps:
            t_switch = time.perf_counter()
            data = rerender(data, cfg.image_size, cfg.patch_size)
            model = resized_vla(model, cfg.image_size)
            new_opt, new_named = _optimizer(model, aux, cfg)
            carry_optimizer_state(opt, named, new_opt, new_named)
            opt, named, lay = new_opt, new_named, model.layout(INSTRUCTION_LEN)
            warm_log = {"size": cfg.warm_start_size, "steps": cfg.warm_start_steps,
                        "switch_seconds": round(time.perf_counter() - t_switch, 1)}
            log(f"after step {step + 1}: image size {cfg.warm_start_size} -> {cfg.image_size} "
                f"({warm_log['switch_seconds']}s to re-render {n} samples)")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save(model, tok, out_dir / f"step{step + 1}", cfg, losses, {})
    model.eval()
    summary = {"samples": n, "expert_success": data["expert_success"], "data_seconds": round(t_data, 1),
               "wall_seconds": round(time.perf_counter() - t0, 1),
               "process_cpu_seconds": round(time.process_time() - cpu0, 1), "final_loss": running[0],
               "final_aux_losses": {"seg": running[1], "rel": running[2]}, "dagger": dagger_log}
    if warm_log is not None:
        summary["warm_start"] = warm_log
    save(model, tok, out_dir, cfg, losses, summary)
    log(f"saved {out_dir}: {summary}")
    return summary


def _optimizer(model, aux, cfg: TrainConfig):
    """AdamW over the model and the auxiliary heads (no decay on vectors); also returns name -> parameter."""
    import torch

    params = list(model.named_parameters()) + [("aux." + k, v) for k, v in aux.named_parameters()]
    decay = [p for name, p in params if p.dim() >= 2]
    no_decay = [p for name, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    return opt, dict(params)


def save(model, tok, out_dir: Path, cfg: TrainConfig, losses: list, summary: dict) -> None:
    """Write weights, tokenizer and ``training.json`` (config, loss curve, timings)."""
    from foretell.core.report import write_json

    model.save_pretrained(out_dir)
    tok.save(out_dir / TOKENIZER_NAME)
    write_json(out_dir / "training.json", {"train_config": asdict(cfg), "summary": summary, "loss_curve": losses})


def load_policy(weights_dir: Path | str | None = None):
    """Load the shipped (or given) weights and tokenizer: returns ``(vla, tokenizer)``."""
    from foretell.specprune.model import OFTStyleVLA
    from foretell.specprune.tokenizer import InstructionTokenizer

    d = Path(weights_dir) if weights_dir is not None else DEFAULT_POLICY_DIR
    if not d.is_dir():
        raise ForetellError(f"weights directory {d} {'is a file' if d.exists() else 'does not exist'}; pass a directory written by "
                            f"scripts/specprune/train_bc.py (default: {DEFAULT_POLICY_DIR})")
    return OFTStyleVLA.from_pretrained(d), InstructionTokenizer.load(d / TOKENIZER_NAME)


def training_info(weights_dir: Path | str | None = None) -> dict:
    """The ``training.json`` written next to the weights (empty dict when absent)."""
    d = Path(weights_dir) if weights_dir is not None else DEFAULT_POLICY_DIR
    p = d / "training.json"
    return json.loads(p.read_text()) if p.is_file() else {}
