"""``foretell specdiff bench``: every method on one digits testbed, same noise, side by side.

Protocol: one untimed run per method under PyTorch's FLOP counter (MACs and the quality samples), then
``repeats`` timed rounds in which the methods run interleaved (install, sample the batch, remove), so
a shared machine's load hits every method alike. speedup = median(full) / median(method).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from foretell.core.errors import ForetellError

BUILTIN_MODELS = ("sd3-digits", "flux-digits")
ASSETS = Path(__file__).resolve().parent / "assets"
KNOWN_LIMITS = {
    ("first_block_cache", "sd3"): "diffusers' FirstBlockCache subtracts the blocks' encoder_hidden_states outputs; "
                                  "SD3's last joint block (context_pre_only) returns None for them",
    ("faster_cache", "flux"): "FasterCache approximates the unconditional output with an FFT over an image-shaped "
                              "(B, C, H, W) output; FLUX returns packed tokens (B, N, C)",
}


@dataclass
class BenchConfig:
    """Settings of one bench run (recorded in the report's ``config``)."""

    model: str = "sd3-digits"
    steps: int = 28
    samples: int = 16
    guidance_scale: float = 4.0
    cache_rate: float | None = None  # None: SpecDiffConfig's default
    speculative_steps: int = 2
    methods: tuple = ()
    seed: int = 0
    repeats: int = 3
    premise: bool = True
    threads: int = 0
    device: str = "cpu"  # where the model runs: cpu, cuda, cuda:N or mps (checked to exist)

    def __post_init__(self) -> None:
        from foretell.core.device import resolve_device
        from foretell.specdiff.testbed.peers import DEFAULT_METHODS, check_method_names

        self.device = str(resolve_device(self.device))
        if int(self.steps) < 1:
            raise ForetellError(f"--steps must be >= 1, got {self.steps}")
        if int(self.samples) < 2:
            raise ForetellError(f"--samples must be >= 2 (Frechet needs two), got {self.samples}")
        if int(self.repeats) < 1:
            raise ForetellError(f"--repeats must be >= 1, got {self.repeats}")
        if self.cache_rate is None:
            from foretell.specdiff.config import SpecDiffConfig

            self.cache_rate = SpecDiffConfig().cache_rate
        if not 0.0 <= float(self.cache_rate) < 1.0:
            raise ForetellError(f"--cache-rate must be in [0, 1), got {self.cache_rate}")
        if int(self.speculative_steps) < 1:
            raise ForetellError(f"--speculative-steps must be >= 1, got {self.speculative_steps}")
        self.methods = tuple(check_method_names(list(self.methods or DEFAULT_METHODS)))


def resolve_model(name: str):
    """``sd3-digits`` / ``flux-digits`` (shipped) or a folder written by the training script."""
    from foretell.specdiff.testbed.models import DigitsDiT

    if name in BUILTIN_MODELS:
        return DigitsDiT.load(ASSETS / name)
    path = Path(name)
    if path.is_dir():
        return DigitsDiT.load(path)
    raise ForetellError(f"unknown model {name!r}; accepted: {', '.join(BUILTIN_MODELS)} or a folder with "
                        "config.json + model.safetensors")


def run_bench(cfg: BenchConfig, log=print) -> dict:
    """Run the comparison; returns the report dict (schema in docs/specdiff.md)."""
    import torch

    from foretell.core.macs import count_macs
    from foretell.core.progress import progress
    from foretell.specdiff.testbed import metrics
    from foretell.specdiff.testbed.classifier import default_classifier
    from foretell.specdiff.testbed.data import load_digits_images
    from foretell.specdiff.testbed.peers import MethodSkipped, install_method
    from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    model = resolve_model(cfg.model).to(device)
    classifier, clf_info = default_classifier()  # stays on the CPU: metrics run once, after the timed rounds
    noise = make_noise(model, cfg.samples, cfg.seed)
    labels = sample_labels(cfg.samples, device)
    calib_noise = make_noise(model, cfg.samples, cfg.seed + 1000)  # MagCache calibrates on other noise

    def run(method, noise_=noise):
        method.before_run()
        try:
            return sample(model, noise_, labels, scheduler=method.scheduler, guidance_scale=cfg.guidance_scale,
                          step_callback=method.step_callback)
        finally:
            method.after_run()

    def install(name):
        scheduler = make_scheduler(model, cfg.steps)
        calibrate = lambda: sample(model, calib_noise, labels, scheduler=make_scheduler(model, cfg.steps),  # noqa: E731
                                   guidance_scale=cfg.guidance_scale)
        method = install_method(name, model, scheduler, guidance_scale=cfg.guidance_scale, steps=cfg.steps,
                                cache_rate=cfg.cache_rate, speculative_steps=cfg.speculative_steps,
                                calibrate=calibrate, mag_ratios=mag_cache_ratios.get("ratios"))
        method.scheduler = scheduler  # the runs step with the scheduler the method was given
        if name == "mag_cache":
            mag_cache_ratios["ratios"] = method.config.get("mag_ratios")  # calibrate once per bench
        return method

    skipped, images, macs, configs, stats = {}, {}, {}, {}, {}
    mag_cache_ratios = {}
    for name in progress(cfg.methods, desc=f"{cfg.model}: MACs + samples", total=len(cfg.methods)):
        try:
            method = install(name)
        except MethodSkipped as exc:
            skipped[name] = str(exc)
            continue
        try:
            macs[name], out = count_macs(lambda: run(method))
            images[name] = out.cpu()  # metrics and plots read them on the host
            configs[name] = method.config
            stats[name] = method.stats()
        except Exception as exc:  # a diffusers cache that does not handle this model class at run time
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            hint = KNOWN_LIMITS.get((name, model.cfg.kind))
            skipped[name] = f"{reason} ({hint})" if hint else reason
        finally:
            method.remove()
    if "full" not in images:
        raise ForetellError(f"the full-compute reference failed: {skipped.get('full')}")
    ran = [n for n in cfg.methods if n in images]

    seconds = {n: [] for n in ran}
    for _ in progress(range(cfg.repeats), desc=f"{cfg.model}: timed rounds", total=cfg.repeats):
        for name in ran:
            method = install(name)
            try:
                _synchronize(device)
                t0 = time.perf_counter()
                out = run(method)
                _synchronize(device)  # GPU work is asynchronous: wait for it before reading the clock
                seconds[name].append(time.perf_counter() - t0)
            finally:
                method.remove()
            # the MACs pass runs SDPA on its math backend (core.macs), so timed outputs may differ in rounding
            diff = float((out.cpu() - images[name]).abs().max())
            stats.setdefault(name, {})["timed_vs_counted_max_abs_diff"] = max(
                diff, stats[name].get("timed_vs_counted_max_abs_diff", 0.0))

    real_feats = metrics.classifier_features(classifier, load_digits_images()[0])
    ref = images["full"]
    methods = {}
    full_median = statistics.median(seconds["full"])
    for name in ran:
        med = statistics.median(seconds[name])
        imgs = images[name]
        methods[name] = {
            "seconds": med,
            "speedup": full_median / med,
            "macs_fraction": macs[name] / macs["full"],
            "psnr": metrics.psnr(imgs, ref),
            "ssim": metrics.ssim(imgs, ref),
            "class_acc": metrics.class_accuracy(classifier, imgs, labels),
            "frechet": metrics.frechet_distance(metrics.classifier_features(classifier, imgs), real_feats),
            "seconds_all": seconds[name],
            "macs": macs[name],
            "mac_reduction": macs["full"] / macs[name],
            "speculative_macs_fraction": stats.get(name, {}).get("speculative_macs_fraction"),
            "cache_mib": (stats[name]["cache_bytes"] / 2 ** 20) if "cache_bytes" in stats.get(name, {}) else None,
            "config": configs.get(name, {}),
            "stats": stats.get(name, {}),
        }
        log(f"{name:24s} {med:7.2f}s  x{methods[name]['speedup']:.2f}  MACs {methods[name]['macs_fraction']:.3f}  "
            f"PSNR {methods[name]['psnr']:.2f}  SSIM {methods[name]['ssim']:.3f}  "
            f"acc {methods[name]['class_acc']:.3f}  FD {methods[name]['frechet']:.2f}")
    report = {
        "model": cfg.model,
        "steps": cfg.steps,
        "samples": cfg.samples,
        "methods": methods,
        "skipped": skipped,
        "config": asdict(cfg),
        "model_config": asdict(model.cfg),
        "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20,
        "classifier": clf_info,
        "threads": torch.get_num_threads(),
        "method_revision": _method_revision(),
        "protocol": "untimed run under FlopCounterMode gives MACs + samples; then interleaved timed rounds "
                    "(install, sample the batch, remove) with medians; speedup = median(full)/median(method)",
        "notes": {"psnr_null_means": "identical to the full output (infinite PSNR)",
                  "frechet": "Frechet distance of classifier penultimate features (64-d) of the samples vs "
                             "all 1797 real digits; small sample counts bias it upwards for every method alike"},
    }
    if cfg.premise:
        from foretell.specdiff.testbed.premise import premise_check

        report["premise_check"] = premise_check(model, noise[: min(cfg.samples, 8)], labels[: min(cfg.samples, 8)],
                                                steps=cfg.steps, guidance_scale=cfg.guidance_scale)
    report["images"] = {n: images[n] for n in ran}  # removed before writing JSON; used by plots
    return report


def _synchronize(device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _method_revision() -> dict | None:
    """The git commit of the checkout and any uncommitted SpecDiff source files (None outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/foretell/specdiff"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head or None, "uncommitted": [line[3:] for line in dirty if line.strip()]}


def strip_images(report: dict) -> dict:
    """The JSON-serialisable part of a report."""
    return {k: v for k, v in report.items() if k != "images"}


def pareto_plot(report: dict, path: str | Path) -> Path:
    """Speedup (x) vs PSNR against full (y) for every method that ran, one point each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foretell.core.report import write_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cap = 60.0
    for name, m in report["methods"].items():
        psnr = m["psnr"] if m["psnr"] is not None and m["psnr"] != float("inf") else cap
        marker = "*" if name == "specdiff" else ("s" if name.startswith("specdiff") else "o")
        ax.scatter(m["speedup"], psnr, marker=marker, s=90 if marker == "*" else 40)
        ax.annotate(name, (m["speedup"], psnr), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("wall-clock speedup vs full (median)")
    ax.set_ylabel(f"PSNR vs full output (dB; identical plotted at {cap:.0f})")
    ax.set_title(f"{report['model']}, {report['steps']} steps, {report['samples']} samples")
    ax.grid(alpha=0.3)
    out = write_figure(path, fig)
    plt.close(fig)
    return out


def sample_grid(report: dict, path: str | Path, per_method: int = 10) -> Path:
    """A grid of the first ``per_method`` samples of every method (rows) for a visual check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foretell.core.report import write_figure

    names = list(report["images"])
    k = min(per_method, report["samples"])
    fig, axes = plt.subplots(len(names), k, figsize=(k * 0.8, len(names) * 0.85), squeeze=False)
    for r, name in enumerate(names):
        imgs = report["images"][name]
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(imgs[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    out = write_figure(path, fig)
    plt.close(fig)
    return out
