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
TOKENIZER_NAME = "tokenizer.json"


@dataclass
class TrainConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    episodes: int = 300
    noise_max: float = 0.25          # per-episode noise std ~ U(0, noise_max) on the executed xyz/yaw
    clean_fraction: float = 0.25     # episodes executed without noise
    steps: int = 900
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 60
    threads: int = 1
    image_size: int = 96
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

    def check(self) -> None:
        for name in ("episodes", "steps", "batch_size", "threads", "image_size", "chunk", "horizon"):
            if int(getattr(self, name)) < 1:
                raise ForetellError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.loss not in ("l1", "mse"):
            raise ForetellError(f"loss={self.loss!r} is not supported; accepted: l1, mse")
        if not 0.0 <= self.clean_fraction <= 1.0 or self.noise_max < 0:
            raise ForetellError("clean_fraction must be in [0, 1] and noise_max >= 0")


def vla_config(cfg: TrainConfig, vocab_size: int):
    """The :class:`VLAConfig` the testbed trains (sizes chosen for CPU training in minutes)."""
    from foretell.specprune.model import VLAConfig
    from foretell.specprune.sim import ACTION_DIM, PROPRIO_DIM

    return VLAConfig(image_size=cfg.image_size, patch_size=cfg.patch_size, views=("third", "wrist"),
                     hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                     num_kv_heads=cfg.num_kv_heads, intermediate_size=cfg.intermediate_size,
                     vocab_size=vocab_size, proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM, chunk=cfg.chunk,
                     vision_dim=cfg.vision_dim, action_head_hidden=cfg.action_head_hidden)


def make_tokenizer():
    """The word tokenizer over the task's closed vocabulary."""
    from foretell.specprune.sim import vocabulary
    from foretell.specprune.tokenizer import InstructionTokenizer

    return InstructionTokenizer(vocabulary())


def collect_demonstrations(cfg: TrainConfig, tokenizer, progress_desc: str = "demos") -> dict:
    """Roll out the expert (with seeded execution noise) and return stacked training arrays.

    Keys: ``third``/``wrist`` uint8 [N, H, W, 3], ``proprio`` float32 [N, 8], ``ids`` int64 [N, L],
    ``actions`` float32 [N, chunk, 7], ``episode`` int32 [N]; plus ``expert_success``.
    """
    from foretell.core.progress import progress
    from foretell.specprune.sim import expert_action, expert_chunk, initial_state, proprio, render_views, sample_layout, transition

    rng = np.random.default_rng([cfg.seed, 77])
    cols = {k: [] for k in ("third", "wrist", "proprio", "ids", "actions", "episode")}
    successes = 0
    for ep in progress(range(cfg.episodes), desc=progress_desc):
        layout = sample_layout(TRAIN_SEED_BASE + cfg.seed, ep)
        ids = tokenizer.encode_batch([layout.instruction], length=INSTRUCTION_LEN)[0].numpy()
        sigma = 0.0 if rng.random() < cfg.clean_fraction else rng.uniform(0.0, cfg.noise_max)
        state = initial_state(layout)
        while not state.done:
            views = render_views(state, cfg.image_size)
            cols["third"].append(views["third"])
            cols["wrist"].append(views["wrist"])
            cols["proprio"].append(proprio(state, cfg.horizon))
            cols["ids"].append(ids)
            cols["actions"].append(expert_chunk(state, cfg.chunk, cfg.horizon).astype(np.float32))
            cols["episode"].append(ep)
            act = expert_action(state)
            if sigma > 0:
                noise = rng.normal(0.0, sigma, size=4)
                act[[0, 1, 2, 5]] += noise
            transition(state, act, cfg.horizon)
        successes += int(state.success)
    data = {k: np.stack(v) for k, v in cols.items()}
    data["expert_success"] = successes / cfg.episodes
    return data


def reinit_for_training(model) -> None:
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
        for p in (model.action_slots, model.bos, model.stop, model.backbone.embed_tokens.weight):
            p.normal_(0.0, 1.0)


def to_model_inputs(third, wrist, ids, prop):
    """numpy uint8 images [B, H, W, 3] etc. -> the model's tensors (images float in [0, 1])."""
    import torch

    def img(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)

    return ({"third": img(third), "wrist": img(wrist)}, torch.as_tensor(ids, dtype=torch.long),
            torch.as_tensor(prop, dtype=torch.float32))


def train(cfg: TrainConfig, out_dir: Path = ASSET_DIR, log=print) -> dict:
    """Collect demonstrations, train the VLA by BC, save weights + tokenizer + training log."""
    import torch

    cfg.check()
    prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(int(cfg.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, Path(out_dir), log)
    finally:  # leave the process as we found it (tests run in one interpreter)
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1])


def _train(cfg: TrainConfig, out_dir: Path, log) -> dict:
    import torch

    from foretell.core.seed import seed_everything
    from foretell.specprune.model import OFTStyleVLA

    seed_everything(cfg.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    tok = make_tokenizer()
    data = collect_demonstrations(cfg, tok)
    n = len(data["actions"])
    log(f"demonstrations: {cfg.episodes} episodes, {n} samples, expert success {data['expert_success']:.3f}, "
        f"{time.perf_counter() - t0:.0f}s")
    t_data = time.perf_counter() - t0
    model = OFTStyleVLA(vla_config(cfg, tok.vocab_size)).train()
    if cfg.fan_in_init:
        reinit_for_training(model)
    decay = [p for name, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    losses, running = [], None
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).numpy()
        images, ids, prop = to_model_inputs(data["third"][idx], data["wrist"][idx], data["ids"][idx], data["proprio"][idx])
        target = torch.from_numpy(data["actions"][idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if cfg.loss == "l1":
            loss = model.loss(images, ids, prop, target)
        else:
            loss = (model(images, ids, prop) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 25 == 0 or step == cfg.steps - 1:
            losses.append({"step": step, "loss": round(running, 5), "seconds": round(time.perf_counter() - t0, 1)})
            log(f"step {step}/{cfg.steps} loss {running:.4f} lr {lr_at(step):.2e} {time.perf_counter() - t0:.0f}s")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save(model, tok, out_dir / f"step{step + 1}", cfg, losses, {})
    model.eval()
    summary = {"samples": n, "expert_success": data["expert_success"], "data_seconds": round(t_data, 1),
               "wall_seconds": round(time.perf_counter() - t0, 1),
               "process_cpu_seconds": round(time.process_time() - cpu0, 1), "final_loss": running}
    save(model, tok, out_dir, cfg, losses, summary)
    log(f"saved {out_dir}: {summary}")
    return summary


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

    d = Path(weights_dir) if weights_dir is not None else ASSET_DIR
    if not d.is_dir():
        raise ForetellError(f"weights directory {d} does not exist; pass a directory written by "
                            f"scripts/specprune/train_bc.py (default: {ASSET_DIR})")
    return OFTStyleVLA.from_pretrained(d), InstructionTokenizer.load(d / TOKENIZER_NAME)


def training_info(weights_dir: Path | str | None = None) -> dict:
    """The ``training.json`` written next to the weights (empty dict when absent)."""
    d = Path(weights_dir) if weights_dir is not None else ASSET_DIR
    p = d / "training.json"
    return json.loads(p.read_text()) if p.is_file() else {}
