"""`foretell specdiff ...` commands (cheap to import: torch/diffusers load inside the commands)."""

from __future__ import annotations

from foretell.core.argtypes import float_in, int_at_least, seed_int, threads_int
from foretell.core.device import add_device_argument


def register(sub) -> None:
    p = sub.add_parser("specdiff", help="SpecDiff: self-speculative multi-level feature caching for diffusion transformers",
                       description="SpecDiff: self-speculative multi-level feature caching for diffusion transformers.")
    p.set_defaults(_parser=p)
    actions = p.add_subparsers(dest="specdiff_command", metavar="ACTION")
    b = actions.add_parser("bench", help="compare no cache, SpecDiff, its ablations and diffusers' caches on a digits testbed",
                           description="Sample the same noise with every method on a trained digits DiT and report "
                                       "wall-clock speedup, MACs, PSNR/SSIM vs the full output, class accuracy and "
                                       "Frechet distance; writes JSON and a Pareto plot.")
    b.add_argument("--model", default="sd3-digits",
                   help="sd3-digits, flux-digits (shipped) or a folder written by scripts/specdiff/train_digits.py")
    b.add_argument("--steps", type=int_at_least(1), default=28, help="sampling steps (default 28)")
    b.add_argument("--samples", type=int_at_least(2), default=16, help="images per method, one batch (default 16)")
    b.add_argument("--guidance-scale", type=float_in(0.0, 1000.0), default=4.0, help="classifier-free guidance scale (default 4.0)")
    b.add_argument("--cache-rate", type=float_in(0.0, 1.0), default=None,
                   help="SpecDiff cache rate in [0, 1) (default: SpecDiffConfig's, 0.8)")
    b.add_argument("--speculative-steps", type=int_at_least(1), default=2, help="SpecDiff speculative steps K >= 1 (default 2)")
    b.add_argument("--methods", default=None,
                   help="comma-separated methods (default: full, specdiff, ablations and every peer)")
    b.add_argument("--repeats", type=int_at_least(1), default=3, help="timed rounds per method (default 3)")
    b.add_argument("--threads", type=threads_int(0), default=0, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--no-premise", action="store_true", help="skip the history-vs-speculation premise check")
    b.add_argument("--seed", type=seed_int, default=0, help="noise seed (default 0)")
    b.add_argument("--quick", action="store_true", help="smoke run: 6 steps, 4 samples, 1 repeat, full+specdiff+taylorseer")
    add_device_argument(b)
    b.add_argument("--json", default="reports/specdiff/bench.json", help="output JSON path")
    b.add_argument("--plot", default=None, help="Pareto plot path, an image format matplotlib writes, e.g. .png, .pdf, "
                   ".svg (default: beside the JSON, .png)")
    b.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from pathlib import Path

    from foretell.core.errors import ForetellError
    from foretell.core.report import write_json
    from foretell.specdiff.bench import BenchConfig, pareto_plot, run_bench, sample_grid, strip_images

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods is not None else ()
    if args.methods is not None and not methods:
        raise ForetellError(f"--methods {args.methods!r} lists no method; give a comma-separated list such as full,specdiff")
    steps, samples, repeats = args.steps, args.samples, args.repeats
    if args.quick:
        steps, samples, repeats = min(steps, 6), min(samples, 4), 1
        methods = methods or ("full", "specdiff", "taylorseer")
    if args.speculative_steps > steps:
        raise ForetellError(f"--speculative-steps {args.speculative_steps} exceeds the {steps} sampling steps"
                            f"{' of --quick' if args.quick else ''}; K must be at most the number of steps")
    out = Path(args.json)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    _check_plot_path(plot, out)
    cfg = BenchConfig(model=args.model, steps=steps, samples=samples, guidance_scale=args.guidance_scale,
                      cache_rate=args.cache_rate, speculative_steps=args.speculative_steps, methods=methods,
                      seed=args.seed, repeats=repeats, premise=not (args.no_premise or args.quick),
                      threads=args.threads, device=args.device)
    report = run_bench(cfg)
    report["plot"] = str(pareto_plot(report, plot))
    report["grid"] = str(sample_grid(report, plot.with_name(plot.stem + "_samples.png")))
    write_json(out, strip_images(report))
    print(f"wrote {out} and {plot}")
    return 0


def _check_plot_path(plot, out) -> None:
    """Before any work: the plot (and its ``_samples`` grid) must be a format matplotlib writes and
    must not overwrite the JSON report."""
    from matplotlib.figure import Figure

    from foretell.core.errors import ForetellError
    from foretell.core.report import check_distinct_outputs

    formats = Figure().canvas.get_supported_filetypes()
    suffix = plot.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ForetellError(f"--plot {plot}: {'.' + suffix if suffix else 'no extension'} is not an image format "
                            f"matplotlib writes; accepted: {', '.join('.' + f for f in sorted(formats))}")
    grid = plot.with_name(plot.stem + "_samples.png")
    check_distinct_outputs({"--json": out, "--plot": plot, "--plot's sample grid": grid})
