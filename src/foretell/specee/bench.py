"""`foretell specee bench`: every method side by side on the same prompts, one JSON report.

Timing: one warm-up generation, then for each prompt every method runs in rotating order (so the
shared machine's load hits all methods alike); per method the per-prompt wall times are summed
(median over ``repeats``). ``speedup`` = tokens/s over the ``full`` method measured in the same run.
``agreement`` = generated tokens equal to the full model's greedy output at the same position;
``first_divergence`` = mean index of the first differing token (the length when none differs).
``avg_layers`` = decoder layers per target pass (for the speculative methods a pass verifies a
block; ``layers_per_token`` divides by emitted tokens). ``oracle_avg_layers``: earliest layer whose
argmax equals the final token, on the full model's own trajectory.

``specee`` runs with the engine's default thresholds (calibrated per layer when the predictors
carry them; ``config.thresholds`` lists them); extras at fixed thresholds (0.5 = the paper's, 0.9,
1.0 = overhead only), checked exits (``check_exits``, lossless) at several thresholds, the other KV
strategy, and ``exit_check`` (the same rule with the candidate
check done by the full-vocabulary product instead of the int8 screen) are measured in the same run.
``speculative`` and ``specee+speculative`` verify the configured draft tree (default: the chain plus
the draft's 2nd and 3rd choices at depth 1); the extras ``speculative_chain`` and
``specee+speculative_chain`` verify the chain alone (report key ``draft_tree``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from foretell.core.progress import progress
from foretell.core.seed import seed_everything
from foretell.specee.adapters import all_layer_states
from foretell.specee.checked import checked_decode
from foretell.specee.engine import ASSETS, SpecEE
from foretell.specee.generate import DecodeStats, TokenPicker, decode
from foretell.specee.kv import LayerStepper
from foretell.specee.perplexity import perplexity, teacher_forced_nll
from foretell.specee.predictor import LayerPredictors
from foretell.specee.rules import ExitRule, FixedLayerRule, FullVocabRule, GapRule, SpecEERule
from foretell.specee.scheduler import LayerSchedule, oracle_exit_layers
from foretell.specee.speculative import MergedVerifyRule, speculative_decode

CHECKED = "specee_checked"                          # extras with check_exits (lossless), by threshold
CHECKED_THRESHOLDS = {"": None, "_threshold_0.9": 0.9, "_threshold_0.7": 0.7, "_threshold_0.5": 0.5}


def oracle_layers(ee: SpecEE, out: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Oracle exit layer count (1..N) of every generated token of the full model's output."""
    acc = ee.acc
    states = all_layer_states(acc, out[0, :-1].to(acc.device))[:, n_prompt - 1:]
    am = torch.stack([acc.logits(acc.norm(states[i])).argmax(-1) for i in range(acc.num_layers)])
    return oracle_exit_layers(am) + 1


class MethodSet:
    """Builds each method as ``fn(input_ids, max_new) -> (ids, DecodeStats)``."""

    def __init__(self, ee: SpecEE, assets: Path, fixed_layers: int, assistant_layers: int):
        self.ee = ee
        acc = ee.acc
        cal = json.loads((Path(assets) / "calibration.json").read_text())
        self.calibration = cal
        fv = LayerPredictors.load(assets, "full_vocab_predictors")
        fv.check_compatible(num_layers=acc.num_layers, hidden_size=acc.hidden_size, vocab_size=acc.vocab_size)
        self.fv = fv.to(acc.device)
        sched = lambda: LayerSchedule(list(ee.predictors.config.offline_layers), acc.num_layers)  # noqa: E731
        self.fixed_layers = fixed_layers
        self.fill = LayerStepper(acc, "fill")
        self.lazy = LayerStepper(acc, "lazy")
        picker = TokenPicker()
        eos = ee.tokenizer.eos_token_id if ee.tokenizer is not None else None
        k = ee.config.k
        other_kv = "fill" if ee.config.kv_strategy == "lazy" else "lazy"

        def dec(rule, draft, stepper=None):
            return lambda ids, n: decode(acc, stepper or self.lazy, rule, draft, ids, max_new_tokens=n,
                                         picker=picker, eos_token_id=eos, k=k)

        def spec(rule, stepper=None, check=False, tree=()):
            return lambda ids, n: speculative_decode(acc, stepper or self.lazy, ee.draft, ids, max_new_tokens=n,
                                                     gamma=ee.config.gamma, k=k, rule=rule, eos_token_id=eos,
                                                     check=check, tree=tree)

        def checked(threshold):
            rule = SpecEERule(acc, sched(), ee.predictors, threshold)
            return lambda ids, n: checked_decode(acc, self.lazy, rule, ee.draft, ids, max_new_tokens=n, k=k,
                                                 eos_token_id=eos)

        self.methods = {
            "full": dec(None, None),
            "specee": dec(ee.rule(), ee.draft, self.lazy if ee.config.kv_strategy == "lazy" else self.fill),
            "speculative": spec(None, tree=ee.config.tree),
            "specee+speculative": spec(ee.rule(merged=True), tree=ee.config.tree),
            "full_vocab_predictor": dec(FullVocabRule(acc, sched(), fv, ee.config.threshold), None),
            "adainfer": dec(GapRule(acc, sched(), cal["adainfer_gap"]), None),
            f"fixed_layer_{fixed_layers}": dec(FixedLayerRule(acc, fixed_layers), None),
        }
        self.extra = {
            "specee_kv_" + other_kv: dec(ee.rule(), ee.draft, self.fill if other_kv == "fill" else self.lazy),
            "draft_only_no_exit": dec(ExitRule(acc), ee.draft),
            "specee_threshold_1": dec(SpecEERule(acc, sched(), ee.predictors, 1.0), ee.draft),
            "specee_threshold_0.9": dec(SpecEERule(acc, sched(), ee.predictors, 0.9), ee.draft),
            "specee_threshold_0.5": dec(SpecEERule(acc, sched(), ee.predictors, 0.5), ee.draft),
            "specee_full_product_check": dec(SpecEERule(acc, sched(), ee.predictors, ee.config.threshold,
                                                        screen=False), ee.draft),
            "specee_threshold_0.5_full_product_check": dec(SpecEERule(acc, sched(), ee.predictors, 0.5,
                                                                      screen=False), ee.draft),
            **{CHECKED + suffix: checked(t) for suffix, t in CHECKED_THRESHOLDS.items()},
            "specee+speculative_checked_threshold_0.5":
                spec(MergedVerifyRule(acc, sched(), ee.predictors, 0.5), check=True),
        }
        if ee.config.tree:
            self.extra["speculative_chain"] = spec(None)
            self.extra["specee+speculative_chain"] = spec(ee.rule(merged=True))
        self.methods["transformers_generate"] = self._hf_greedy(eos)
        if ee.kernels is not None:
            self.methods["full_torch_linear"] = self._stock_kernels(self.methods["full"])
            self.methods["transformers_generate"] = self._stock_kernels(self.methods["transformers_generate"])
        self.assistant = None
        self.assistant_error = None
        try:
            from foretell.specee.draft import truncated_assistant

            self.assistant = truncated_assistant(ee.model, assistant_layers)
            self.methods["assisted_generation"] = self._assisted(eos)
        except Exception as exc:  # noqa: BLE001 - reported as "skipped" with the reason
            self.assistant_error = f"{type(exc).__name__}: {exc}"

    def _stock_kernels(self, fn):
        """``fn`` with the model's stock ``F.linear`` (the baseline without SpecEE's packed kernels)."""
        kernels = self.ee.kernels

        def run(ids, n):
            kernels.enabled = False
            try:
                return fn(ids, n)
            finally:
                kernels.enabled = True
        return run

    def _hf_greedy(self, eos):
        """Plain ``model.generate`` greedy decoding: what a user runs without foretell."""
        model = self.ee.model

        def run(ids, n):
            out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos)
            new = out.shape[1] - ids.shape[1]
            return out, DecodeStats(layers=[model.config.num_hidden_layers] * new, emitted=[1] * new)
        return run

    def _assisted(self, eos):
        model, assistant = self.ee.model, self.assistant

        def run(ids, n):
            out = model.generate(ids, assistant_model=assistant, max_new_tokens=n, do_sample=False,
                                 eos_token_id=eos, pad_token_id=eos)
            st = DecodeStats(layers=[model.config.num_hidden_layers], emitted=[out.shape[1] - ids.shape[1]])
            return out, st
        return run


def _agreement(ref: list[int], got: list[int]) -> tuple[float, int]:
    same = sum(1 for i, t in enumerate(ref) if i < len(got) and got[i] == t)
    first = next((i for i, t in enumerate(ref) if i >= len(got) or got[i] != t), len(ref))
    return same / max(1, len(ref)), first


@torch.no_grad()
def run_bench(prompts: list[str], max_new_tokens: int, *, model=None, assets: str | Path | None = None,
              seed: int = 0, repeats: int = 1, ppl_texts: int = 3, extras: bool = True,
              assistant_layers: int = 8, methods_filter: list[str] | None = None, dtype=None, gamma: int = 3,
              tree=(2,), device=None, linear_kernel: str = "auto", log=print) -> dict:
    """Run every method on ``prompts``; returns the report dict (see module docstring). ``dtype``:
    the model's weights (float32 default, or bfloat16); every method, ``full`` included, runs in it.
    ``gamma``: draft chain length of the speculative methods; ``tree``: side leaves per depth that
    ``speculative`` also verifies (see :class:`SpecEEConfig`). ``device``: where the model runs
    (cpu default, "cuda", ...; see :meth:`SpecEE.from_pretrained`); on a GPU each timed
    generation ends with a device synchronisation. ``linear_kernel``: see :class:`SpecEEConfig`; with
    the packed oneDNN kernels every method, ``full`` included, runs on them, and ``full_torch_linear``
    times the full model on the stock kernels in the same run. ``transformers_generate`` is plain
    ``model.generate`` greedy decoding on the stock kernels (what a user runs without foretell)."""
    from foretell.specee.loading import chat_ids, dtype_name

    seed_everything(seed)
    assets = Path(assets) if assets else ASSETS
    ee = SpecEE.from_pretrained(model, predictors=assets, torch_dtype=dtype, gamma=gamma, tree=tree, device=device,
                                linear_kernel=linear_kernel)
    dev = ee.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    tok = ee.tokenizer
    inputs = [chat_ids(tok, p).to(dev) for p in prompts]
    cal = json.loads((assets / "calibration.json").read_text())
    fixed = max(1, min(ee.acc.num_layers - 1, int(round(cal["oracle_avg_layers"]))))
    ms = MethodSet(ee, assets, fixed, assistant_layers)
    if methods_filter:
        ms.methods = {n: f for n, f in ms.methods.items() if n in methods_filter or n == "full"}
    methods = dict(ms.methods)
    if extras:
        methods.update(ms.extra)
    names = list(methods)
    methods["full"](inputs[0], 4)                                        # warm-up
    times = {n: [] for n in names}
    outs = {n: [] for n in names}
    stats = {n: [] for n in names}
    for pi, ids in enumerate(progress(inputs, desc="bench prompts")):
        rep = {n: [] for n in names}
        for r in range(repeats):                       # repeats interleaved across methods
            shift = (pi + r) % len(names)
            for n in names[shift:] + names[:shift]:
                sync()
                t0 = time.perf_counter()
                out, st = methods[n](ids, max_new_tokens)
                sync()
                rep[n].append(time.perf_counter() - t0)
                if r == 0:
                    outs[n].append(out[0, ids.shape[1]:].tolist())
                    stats[n].append(st)
        for n in names:
            times[n].append(statistics.median(rep[n]))
    oracle = torch.cat([oracle_layers(ee, torch.tensor([ids[0].tolist() + o], device=dev), ids.shape[1])
                        for ids, o in zip(inputs, outs["full"]) if o])
    n_layers = ee.acc.num_layers

    def summary(n):
        new = sum(len(o) for o in outs[n])
        agr = [_agreement(r, g) for r, g in zip(outs["full"], outs[n])]
        layers = sum(sum(s.layers) for s in stats[n])
        passes = sum(len(s.layers) for s in stats[n])
        emitted = sum(s.kept for s in stats[n])
        return {"tokens_per_s": new / sum(times[n]), "avg_layers": layers / max(1, passes),
                "agreement": sum(a for a, _ in agr) * 1.0 / len(agr) if agr else None,
                "first_divergence": statistics.fmean(f for _, f in agr) if agr else None,
                "layers_per_token": layers / max(1, emitted), "tokens_per_pass": emitted / max(1, passes),
                "new_tokens": new, "seconds": sum(times[n]), "passes": passes,
                "predictor_evaluations": sum(s.evaluations for s in stats[n]),
                "head_checks": sum(s.head_checks for s in stats[n])}

    res = {n: summary(n) for n in names}
    base = res["full"]["tokens_per_s"]
    for n in names:
        res[n]["speedup"] = res[n]["tokens_per_s"] / base
    main = {n: res[n] for n in ms.methods}
    if ms.assistant_error:
        main["assisted_generation"] = {"skipped": ms.assistant_error}
    elif "assisted_generation" in main:
        main["assisted_generation"]["assistant"] = f"target truncated to its first {assistant_layers} layers"
        # transformers runs its own draft/verify loop: passes and layers per token are not observable
        main["assisted_generation"].update(layers_per_token=None, tokens_per_pass=None)
    oracle_avg = float(oracle.float().mean())
    sp = res["specee"]
    bound = n_layers / sp["avg_layers"]
    report = {
        "model": ee.acc.model_id, "prompts": len(prompts), "new_tokens": max_new_tokens,
        "methods": main, "oracle_avg_layers": oracle_avg,
        "config": {"dtype": dtype_name(ee.acc.dtype), "device": str(dev), "k": ee.config.k,
                   "threshold": ee.config.threshold if ee.config.threshold is not None
                   else "calibrated per layer", "thresholds": {str(l): t for l, t in ee.rule().thresholds.items()},
                   "threshold_calibration": ee.predictors.config.calibration or None,
                   "kv_strategy": ee.config.kv_strategy,
                   "gamma": ee.config.gamma, "tree": list(ee.config.tree), "linear_kernel": ee.linear_kernel, "online_window": ee.config.window, "online_radius": ee.config.radius,
                   "offline_layers": ee.predictors.config.offline_layers, "num_layers": n_layers, "seed": seed,
                   "repeats": repeats, "torch_threads": torch.get_num_threads(), "fixed_layer": fixed,
                   "adainfer_gap": cal["adainfer_gap"]},
        "oracle_layer_saving": 1 - oracle_avg / n_layers,
        "specee_layer_saving": 1 - sp["avg_layers"] / n_layers,
        "specee_fraction_of_oracle_saving": (1 - sp["avg_layers"] / n_layers) / max(1e-9, 1 - oracle_avg / n_layers),
        "specee_bound_speedup": bound,
        "specee_speedup_vs_bound": sp["speedup"] / bound,
        "oracle_bound_speedup": n_layers / oracle_avg,
        "histograms": {"oracle_layers": torch.bincount(oracle, minlength=n_layers + 1)[1:].tolist(),
                       "specee_layers": torch.bincount(torch.tensor([x for s in stats["specee"] for x in s.layers[1:]]
                                                                    or [n_layers], device="cpu"), minlength=n_layers + 1)[1:].tolist()},
    }
    if extras:
        other = "fill" if ee.config.kv_strategy == "lazy" else "lazy"
        report["kv_strategies"] = {ee.config.kv_strategy: res["specee"], other: res["specee_kv_" + other]}
        if "speculative_chain" in res and "speculative" in res:
            report["draft_tree"] = {
                "tree": list(ee.config.tree), "gamma": ee.config.gamma,
                "speculative_tree": res["speculative"], "speculative_chain": res["speculative_chain"],
                "tree_over_chain": res["speculative"]["tokens_per_s"] / res["speculative_chain"]["tokens_per_s"],
                **({"merged_tree": res["specee+speculative"], "merged_chain": res["specee+speculative_chain"],
                    "merged_tree_over_chain": res["specee+speculative"]["tokens_per_s"]
                    / res["specee+speculative_chain"]["tokens_per_s"]}
                   if "specee+speculative" in res and "specee+speculative_chain" in res else {}),
                "note": "same draft, same gamma; the tree also verifies the draft's runners-up as side leaves "
                        "(one pass, tree mask), the chain only its first choices"}
        report["specee_threshold_0.9"] = res["specee_threshold_0.9"]
        report["specee_threshold_0.5"] = res["specee_threshold_0.5"]
        report["checked_exits"] = {n: {**res[n], "rollbacks": sum(s.rollbacks for s in stats[n]),
                                       "retracted_tokens": sum(s.retracted for s in stats[n])}
                                   for n in names if "_checked" in n}
        report["checked_exits"]["note"] = (
            "check_exits=True: every exit is checked when its deferred (lazy) layers reach the last layer "
            "and a wrong one is rolled back, so agreement is 1.0 by construction; layers_per_token counts "
            "every pass, wasted ones and the final flush included")
        def screen_vs_full_product(screened: dict, full_product: dict) -> dict:
            return {"screened": screened, "full_product": full_product,
                    "speedup_of_screen": screened["tokens_per_s"] / full_product["tokens_per_s"]}

        report["exit_check"] = {
            **screen_vs_full_product(res["specee"], res["specee_full_product_check"]),
            "threshold_0.5": screen_vs_full_product(res["specee_threshold_0.5"],
                                                    res["specee_threshold_0.5_full_product_check"]),
            "note": "same thresholds; the candidate check by the int8 screen + exact survivors vs the fp32 "
                    "full-vocabulary product (same decisions, so same tokens); at 0.5 checks are frequent"}
        t_full = res["full"]["seconds"]
        report["overhead"] = {
            "draft_fraction_of_full": res["draft_only_no_exit"]["seconds"] / t_full - 1,
            "draft_plus_predictor_fraction_of_full": res["specee_threshold_1"]["seconds"] / t_full - 1,
            "predictor_fraction_of_full": (res["specee_threshold_1"]["seconds"] - res["draft_only_no_exit"]["seconds"]) / t_full,
        }
    per_pass = lambda n: res[n]["seconds"] / max(1, res[n]["passes"])  # noqa: E731
    report["pass_cost"] = {
        "full_seconds_per_pass": per_pass("full"),
        **{f"{n}_seconds_per_round": per_pass(n) for n in ("speculative", "specee+speculative") if n in res},
        **{f"{n}_round_over_full_pass": per_pass(n) / per_pass("full") for n in ("speculative", "specee+speculative")
           if n in res},
        "note": "a speculative round = gamma draft steps + one verify pass over gamma+1 rows (+ the draft tree's side "
                "leaves) (+ rollback); "
                "it pays off when tokens_per_pass exceeds round_over_full_pass"}
    if ppl_texts:
        report["perplexity"] = _perplexities(ee, ms, inputs[:ppl_texts], outs["full"][:ppl_texts], fixed)
    return report


def _perplexities(ee: SpecEE, ms: MethodSet, inputs, refs, fixed: int) -> dict:
    """Teacher-forced perplexity of the full model's continuations under each exit method
    (None over 0 tokens: continuations shorter than 2 tokens are skipped)."""
    acc = ee.acc
    sched = lambda: LayerSchedule(list(ee.predictors.config.offline_layers), acc.num_layers)  # noqa: E731
    rules = {"full": (None, None), "specee": (ee.rule(), ee.draft),
             "adainfer": (GapRule(acc, sched(), ms.calibration["adainfer_gap"]), None),
             "full_vocab_predictor": (FullVocabRule(acc, sched(), ms.fv, ee.config.threshold), None),
             f"fixed_layer_{fixed}": (FixedLayerRule(acc, fixed), None)}
    out = {}
    for name, (rule, draft) in progress(list(rules.items()), desc="perplexity"):
        nll, n, layers = 0.0, 0, []
        for ids, ref in zip(inputs, refs):
            if len(ref) < 2:
                continue
            seq = torch.tensor(ids[0].tolist() + ref, device=acc.device)
            a, b, c = teacher_forced_nll(acc, ms.lazy, rule, draft, seq, ids.shape[1], ee.config.k)
            nll, n, layers = nll + a, n + b, layers + c
        out[name] = {"perplexity": perplexity(nll, n) if n else None, "tokens": n,
                     "avg_layers": sum(layers) / max(1, len(layers)) if n else None}
    out["speculative"] = {"perplexity": out["full"]["perplexity"], "note": "lossless: same distribution as full"}
    if not out["full"]["tokens"]:
        out["note"] = "no held-out continuation has 2 or more tokens: no perplexity measured"
    out["text"] = "held-out prompts + the full model's greedy continuation (teacher-forced)"
    return out


def bench_markdown(report: dict) -> str:
    """The report's method table (and the headline ratios) as Markdown."""
    from foretell.core.report import markdown_table

    rows = []
    for name, m in report["methods"].items():
        if "skipped" in m:
            rows.append([name, None, None, None, None, None, None])
            continue
        rows.append([name, m["tokens_per_s"], m["speedup"], m["avg_layers"], m["layers_per_token"],
                     m["agreement"], m["first_divergence"]])
    text = markdown_table(["method", "tokens/s", "speedup", "avg layers/pass", "layers/token", "agreement",
                           "first divergence"], rows)
    text += (f"\noracle avg layers {report['oracle_avg_layers']:.2f} of {report['config']['num_layers']} "
             f"(saving {report['oracle_layer_saving']:.1%}); SpecEE saving {report['specee_layer_saving']:.1%} "
             f"= {report['specee_fraction_of_oracle_saving']:.1%} of the oracle's; bound from that saving "
             f"x{report['specee_bound_speedup']:.3f}, measured/bound {report['specee_speedup_vs_bound']:.2f}\n")
    return text
