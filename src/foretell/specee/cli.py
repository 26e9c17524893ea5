"""`foretell specee ...` commands: train, bench, generate. Heavy imports happen inside the commands."""

from __future__ import annotations


ASSET_FILES = {f"{name}.{ext}" for name in ("predictors", "full_vocab_predictors", "draft_head")
               for ext in ("json", "safetensors")} | {"calibration.json"}      # what `train` writes to --out


def _train(args) -> int:
    import time
    from pathlib import Path

    import torch

    from foretell.core.device import resolve_device
    from foretell.core.errors import ForetellError
    from foretell.core.report import check_output_path
    from foretell.core.seed import seed_everything
    from foretell.specee.adapters import decoder_access
    from foretell.specee.collect import collect, collect_draft_data, load_shards
    from foretell.specee.loading import cache_dir, load_model, read_prompts
    from foretell.specee.train import train_all

    # every check that needs no model comes first (and before --quick's overrides)
    if args.k > args.draft_vocab:
        raise ForetellError(f"--k {args.k} is larger than --draft-vocab {args.draft_vocab}: the draft head's k "
                            f"candidates come from its vocabulary; pass --k <= --draft-vocab")
    json_path = Path(args.json) if args.json else None
    if json_path and json_path.name in ASSET_FILES and json_path.resolve().parent == Path(args.out).resolve():
        raise ForetellError(f"--json {args.json} is one of the asset files written to --out {args.out}; "
                            f"pass another name (e.g. {Path(args.out) / 'train_summary.json'})")
    device = resolve_device(args.device)
    data = args.data_dir if args.data_dir is not None else \
        str(cache_dir() / ("collect_quick" if args.quick else "collect"))
    check_output_path(data, "--data-dir", directory=True)
    if args.draft_prompts:
        check_output_path(f"{data}/draft", "--data-dir (its draft/ folder)", directory=True)
    prompts = read_prompts(args.prompts, "train")
    extra = read_prompts(args.draft_prompts, "draft") if args.draft_prompts else None
    if args.quick:
        prompts = prompts[:8]
        extra = extra[:8] if extra else extra
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load_model(args.model, device=device)
    acc = decoder_access(model)
    if args.draft_vocab > acc.vocab_size:
        raise ForetellError(f"--draft-vocab {args.draft_vocab} is larger than the model's vocabulary of "
                            f"{acc.vocab_size} tokens; pass 1..{acc.vocab_size}")
    paths = collect(acc, tok, prompts, data, max_new_tokens=8 if args.quick else args.max_new_tokens)
    busy = [p for p in paths if not p.exists() or p.with_suffix(".tmp").exists()]
    if busy:
        raise ForetellError(f"{busy[0]} is still being collected ({busy[0].with_suffix('.tmp')} exists): wait for "
                            f"the run collecting it, or delete that .tmp file if none is")
    items = load_shards(data)[: len(prompts)]
    if not items:
        raise ForetellError(f"no collected data in {data}; check --prompts")
    draft_items = None
    if extra:
        draft_items = collect_draft_data(acc, tok, extra, f"{data}/draft", max_new_tokens=8 if args.quick
                                         else args.max_new_tokens)
    cal = train_all(acc, items, args.out, k=args.k, draft_vocab_size=args.draft_vocab,
                    draft_epochs=1 if args.quick else args.draft_epochs,
                    predictor_epochs=2 if args.quick else args.predictor_epochs, seed=args.seed,
                    draft_items=draft_items, threshold_target=args.precision_target)
    cal["seconds"] = time.time() - t0
    if args.json:
        from foretell.core.report import write_json

        write_json(args.json, {"out": args.out, "config": {"device": str(device), "model": args.model,
                                                            "k": args.k, "seed": args.seed}, "calibration": cal})
    print(f"wrote draft head and predictors to {args.out} in {cal['seconds']:.0f} s")
    return 0


def _markdown_path(json_path: str):
    """Where ``bench --json`` puts its Markdown copy: the JSON path with the suffix ``.md``; a
    one-line error when that is the JSON path itself or cannot be written (checked before any work)."""
    from pathlib import Path

    from foretell.core.report import check_distinct_outputs, check_output_path

    path = Path(json_path)
    md = path.with_suffix(".md")
    check_distinct_outputs({"--json": path, "its Markdown copy (--json's name ending in .md)": md})
    check_output_path(md, "--json (its Markdown copy)")
    return md


def _check_draft_tree(args) -> None:
    """``--tree`` fits ``--gamma`` (checked before the model loads)."""
    from foretell.specee.tree import check_tree_widths

    check_tree_widths(args.tree, args.gamma)


def _bench(args) -> int:
    import torch

    from foretell.core.device import resolve_device
    from foretell.core.report import write_json
    from foretell.specee.bench import run_bench
    from foretell.specee.loading import read_prompts

    device = resolve_device(args.device)
    md_path = _markdown_path(args.json) if args.json else None
    _check_draft_tree(args)
    prompts = read_prompts(args.prompts, "eval")
    torch.set_num_threads(args.threads)
    n_new = args.max_new_tokens
    if args.quick:
        prompts, n_new = prompts[:2], min(n_new, 12)
    else:
        prompts = prompts[: args.num_prompts] if args.num_prompts else prompts
    report = run_bench(prompts, n_new, model=args.model, assets=args.predictors, seed=args.seed,
                       repeats=args.repeats, ppl_texts=0 if args.quick else args.ppl_texts, extras=not args.quick,
                       dtype=args.dtype, gamma=args.gamma, tree=args.tree, device=device,
                       linear_kernel=args.linear_kernel)
    if args.json:
        from foretell.core.report import write_text
        from foretell.specee.bench import bench_markdown

        write_json(args.json, report)
        write_text(md_path, "# SpecEE bench\n\n" + bench_markdown(report))
    for name, m in report["methods"].items():
        if "skipped" in m:
            print(f"{name:>22}: skipped ({m['skipped']})")
        else:
            print(f"{name:>22}: {m['tokens_per_s']:.2f} tok/s  x{m['speedup']:.2f}  layers {m['avg_layers']:.2f}  "
                  f"agreement {m['agreement']:.3f}")
    print(f"oracle avg layers {report['oracle_avg_layers']:.2f}")
    return 0


def _generate(args) -> int:
    import torch
    from transformers import TextStreamer

    from foretell.core.device import resolve_device
    from foretell.core.seed import seed_everything
    from foretell.specee.engine import SpecEE
    from foretell.specee.loading import chat_ids

    device = resolve_device(args.device)
    _check_draft_tree(args)
    seed_everything(args.seed)
    ee = SpecEE.from_pretrained(args.model, predictors=args.predictors, threshold=args.threshold,
                                kv_strategy=args.kv_strategy, check_exits=args.check_exits,
                                torch_dtype=args.dtype, gamma=args.gamma, tree=args.tree,
                                device=device, linear_kernel=args.linear_kernel)
    ids = chat_ids(ee.tokenizer, args.prompt)
    streamer = TextStreamer(ee.tokenizer, skip_prompt=True)
    ee.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, streamer=streamer, method=args.method,
                generator=torch.Generator(device=device).manual_seed(args.seed))
    st = ee.last_stats
    print(f"[{args.method}] avg layers per pass {st.avg_layers:.2f} of {ee.acc.num_layers}, "
          f"{sum(st.emitted)} tokens in {len(st.layers)} passes")
    return 0


def _tree_arg(text: str) -> tuple[int, ...]:
    from foretell.specee.tree import parse_tree          # imported on use: `foretell --help` stays torch-free

    return parse_tree(text)


_tree_arg.__name__ = "tree"

MAX_GAMMA = 32             # a longer draft chain is all but never accepted in full: only more draft steps
MAX_TEMPERATURE = 100.0    # the next-token distribution is as good as uniform long before this


def register(sub) -> None:
    from foretell.core.argtypes import float_in, int_at_least, int_in, seed_int, threads_int
    from foretell.core.device import add_device_argument

    p = sub.add_parser("specee", help="SpecEE: speculative early exiting for LLM decoding",
                       description="SpecEE: speculative early exiting for LLM decoding.")
    p.set_defaults(_parser=p)
    acts = p.add_subparsers(dest="specee_command", metavar="ACTION")

    def common(q):
        q.add_argument("--model", default=None, help="local transformers model directory (default: embedded SmolLM2-135M-Instruct)")
        q.add_argument("--seed", type=seed_int, default=0, help="random seed (0 .. 2**32-1)")
        add_device_argument(q)

    def dtype_flag(q):
        q.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                       help="model weight dtype (bfloat16: multi-row verify passes cost little more than one row "
                            "on CPUs with bf16 instructions; predictor features stay float32)")
        q.add_argument("--gamma", type=int_in(1, MAX_GAMMA), default=3,
                       help=f"draft chain length of the speculative methods, 1..{MAX_GAMMA} (default 3; in bfloat16 "
                            "2 measured faster)")
        q.add_argument("--tree", type=_tree_arg, default="2",
                       help="side leaves per depth that the speculative methods also verify (the draft's runners-up): "
                            "2 = its 2nd and 3rd choice at depth 1 (default), 3,1 = three at depth 1 and one at "
                            "depth 2, chain = none")
        q.add_argument("--linear-kernel", default="auto", choices=["auto", "onednn", "torch"],
                       help="linear layers: auto = oneDNN packed weights for float32 on the CPU (a multi-row "
                            "verify pass then costs about one row), torch = the stock kernels")

    t = acts.add_parser("train", help="collect full-model generations, train the draft head and exit predictors")
    common(t)
    t.add_argument("--prompts", default=None, help="training prompts, one per line (default: shipped prompts_train.txt)")
    t.add_argument("--out", required=True, help="output directory for predictors/draft head/calibration")
    t.add_argument("--data-dir", default=None, help="where collected trajectories are cached (resumable)")
    t.add_argument("--max-new-tokens", type=int_at_least(1), default=48, help="greedy tokens generated per training prompt")
    t.add_argument("--draft-prompts", default=None,
                   help="extra prompts whose greedy continuations train the draft head ONLY (batched, cheap); "
                        "then the head never sees the predictors' sequences (default: train it on --prompts)")
    t.add_argument("--k", type=int_at_least(1), default=4, help="draft candidates per step (at most --draft-vocab)")
    t.add_argument("--draft-vocab", type=int_at_least(1), default=4096,
                   help="frequency-ranked vocabulary size of the draft head (at most the model's vocabulary)")
    t.add_argument("--draft-epochs", type=int_at_least(1), default=6, help="draft head training epochs")
    t.add_argument("--predictor-epochs", type=int_at_least(1), default=30, help="predictor training epochs")
    t.add_argument("--precision-target", type=float_in(0.0, 1.0, low_open=True), default=0.995,
                   help="exit precision each layer's calibrated threshold must reach on the held-out 20%% of the "
                        "training prompts (scripts/specee/calibrate_thresholds.py picks it by end-to-end agreement)")
    t.add_argument("--threads", type=threads_int(1), default=1,
                   help="torch threads, 1..256 (the default 1 is kind to shared machines)")
    t.add_argument("--json", default=None, help="write the training summary JSON here")
    t.add_argument("--quick", action="store_true", help="8 prompts, 8 tokens, 1-2 epochs (smoke run)")
    t.set_defaults(func=_train)

    b = acts.add_parser("bench", help="all methods and peers side by side; JSON report")
    common(b)
    b.add_argument("--prompts", default=None, help="evaluation prompts, one per line (default: shipped prompts_eval.txt)")
    b.add_argument("--num-prompts", type=int_at_least(0), default=0, help="use only the first N prompts (0 = all)")
    b.add_argument("--max-new-tokens", type=int_at_least(1), default=32, help="tokens generated per prompt")
    b.add_argument("--predictors", default=None, help="asset directory (default: the shipped SmolLM2 assets)")
    b.add_argument("--repeats", type=int_at_least(1), default=1, help="timed repeats per prompt and method (median)")
    b.add_argument("--ppl-texts", type=int_at_least(0), default=3,
                   help="held-out texts for the teacher-forced perplexity (0 = no perplexity)")
    b.add_argument("--threads", type=threads_int(1), default=1, help="torch threads, 1..256")
    b.add_argument("--json", default=None,
                   help="write the report JSON here, and a Markdown copy next to it (the same path ending in .md)")
    b.add_argument("--quick", action="store_true", help="2 prompts, 12 tokens, main methods only")
    dtype_flag(b)
    b.set_defaults(func=_bench)

    g = acts.add_parser("generate", help="generate text for one prompt with SpecEE (streamed)")
    common(g)
    g.add_argument("prompt", help="the user message")
    g.add_argument("--predictors", default=None, help="asset directory (default: the shipped SmolLM2 assets)")
    g.add_argument("--method", default="specee", choices=["specee", "full", "speculative", "specee+speculative"],
                   help="decoding method")
    g.add_argument("--max-new-tokens", type=int_at_least(1), default=64, help="tokens to generate")
    g.add_argument("--threshold", type=float_in(0.0, 1.0), default=None,
                   help="predictor exit threshold on every layer (0.5 = the paper's, 1.0 = never exit); "
                        "default: the per-layer thresholds calibrated into the predictors' JSON")
    g.add_argument("--kv-strategy", default="lazy", choices=["lazy", "fill"], help="KV handling of skipped layers")
    g.add_argument("--check-exits", action="store_true",
                   help="check each exit when its deferred layers run and roll back wrong ones (lossless; "
                        "lazy KV, greedy only)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy")
    g.add_argument("--temperature", type=float_in(0.0, MAX_TEMPERATURE, low_open=True), default=1.0,
                   help=f"sampling temperature, in (0, {MAX_TEMPERATURE:g}]")
    g.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), default=1.0,
                   help="nucleus sampling mass, in (0, 1]")
    g.add_argument("--top-k", type=int_at_least(0), default=0, help="top-k sampling (0 = off)")
    dtype_flag(g)
    g.set_defaults(func=_generate)
