"""Rectified-flow training of the digits testbed models (deterministic for a fixed step count)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from foretell.core.errors import ForetellError
from foretell.core.progress import progress
from foretell.specdiff.testbed.data import load_digits_images
from foretell.specdiff.testbed.models import NULL_CLASS, DigitsDiT, DigitsModelConfig


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_digits_model`."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    label_dropout: float = 0.1
    ema_decay: float = 0.99
    seed: int = 0
    max_minutes: float = 0.0   # optional wall-clock cap (0 = none); a capped run logs stopped_early and is not reproducible

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ForetellError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac))


def train_digits_model(model_cfg: DigitsModelConfig, cfg: TrainConfig) -> tuple[DigitsDiT, dict]:
    """Train a :class:`DigitsDiT` with rectified flow on the upscaled digits; returns (EMA model, log).

    x_t = (1 - t) x0 + t noise with logit-normal t, target v = noise - x0, labels dropped to the null
    class with probability ``label_dropout`` so classifier-free guidance works.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images, labels = load_digits_images(model_cfg.image_size)
    model = DigitsDiT(model_cfg)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    losses, t0, steps_done, stopped_early = [], time.perf_counter(), 0, False
    for step in progress(range(cfg.steps), desc=f"train {model_cfg.kind}-digits", total=cfg.steps):
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen)).view(-1, 1, 1, 1)
        xt = (1.0 - t) * x0 + t * noise
        v = model(xt, t.view(-1), y)
        loss = torch.mean((v - (noise - x0)) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - decay)
        losses.append(float(loss.detach()))
        steps_done = step + 1
        if cfg.max_minutes > 0 and time.perf_counter() - t0 > cfg.max_minutes * 60 and steps_done < cfg.steps:
            stopped_early = True
            break
    log = {"model": asdict(model_cfg), "train": asdict(cfg), "steps_done": steps_done,
           "stopped_early": stopped_early, "seconds": time.perf_counter() - t0,
           "threads": torch.get_num_threads(),
           "loss_first_20": sum(losses[:20]) / max(1, len(losses[:20])),
           "loss_last_20": sum(losses[-20:]) / max(1, len(losses[-20:]))}
    return ema, log


def save_trained(model: DigitsDiT, log: dict, directory: str | Path) -> Path:
    """Save weights + config and the training log (``train_log.json``) into ``directory``."""
    from foretell.core.report import write_json

    directory = model.save(directory)
    write_json(directory / "train_log.json", log)
    return directory
