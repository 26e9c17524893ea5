"""Premise check: does the speculative run predict the current step's important tokens better than
the previous step (history)? Top-20% overlap of his / fut / his*fut with the true current scores.

Token score = attention received per image token summed over layers, recorded with SpecDiff's own
scoring processors (``foretell.specdiff.attention``) on a full-compute run and on K-step speculative
runs from the same noise, labels and guidance (the speculative schedule is SpecDiff's own subsample).
"""

from __future__ import annotations

import torch

from foretell.core.errors import ForetellError


def _record_scores(model, noise, labels, timesteps, sigmas, guidance_scale) -> list[torch.Tensor]:
    """Per-step attention received (N image tokens) during a full-compute CFG Euler run."""
    from foretell.specdiff.adapters import adapter_for
    from foretell.specdiff.attention import AttentionContext
    from foretell.specdiff.testbed.sampler import euler_loop

    transformer = model.transformer
    adapter = adapter_for(transformer)
    ctx = AttentionContext(mode="full", record=True, store_kv=False, text_len=model.cfg.cond_tokens)
    originals = []
    for _, attn in adapter.attention_modules():
        originals.append((attn, attn.processor))
        attn.set_processor(adapter.processor_cls(attn.processor, ctx))
    scores: list[torch.Tensor] = []

    def on_step(i, t):
        if i > 0:
            scores.append(ctx.received.clone())
        ctx.received = None

    try:
        euler_loop(model, noise, labels, timesteps, sigmas, guidance_scale=guidance_scale, step_callback=on_step)
        scores.append(ctx.received.clone())
    finally:
        for attn, proc in originals:
            attn.set_processor(proc)
    return scores


def _overlap(pred: torch.Tensor, true: torch.Tensor, frac: float) -> float:
    k = max(1, int(round(frac * true.numel())))
    a = set(torch.topk(pred, k).indices.tolist())
    b = set(torch.topk(true, k).indices.tolist())
    return len(a & b) / k


def premise_check(model, noise, labels, *, steps: int = 28, guidance_scale: float = 4.0,
                  ks: tuple = (2, 4), top_fraction: float = 0.2, warmup_steps: int = 4) -> dict:
    """Mean top-``top_fraction`` overlap with the true current-step scores over main steps >= ``warmup_steps``."""
    from foretell.specdiff.speculative import speculative_sigmas
    from foretell.specdiff.testbed.sampler import make_scheduler

    try:
        sched = make_scheduler(model, steps)
        sigmas = [float(s) for s in sched.sigmas]
        timesteps = [float(t) for t in sched.timesteps]
        true = _record_scores(model, noise, labels, timesteps, sigmas, guidance_scale)
        result = {"top_fraction": top_fraction, "steps_from": warmup_steps, "samples": int(noise.shape[0]),
                  "history_overlap": None, "by_k": {}}
        main_steps = [i for i in range(max(1, warmup_steps), steps)]
        his = [_overlap(true[i - 1], true[i], top_fraction) for i in main_steps]
        result["history_overlap"] = sum(his) / len(his) if his else None
        ntt = sched.config.num_train_timesteps
        for k in ks:
            spec_sigmas = speculative_sigmas(sigmas, k)
            spec_t = [s * ntt for s in spec_sigmas[:-1]]
            spec = _record_scores(model, noise, labels, spec_t, spec_sigmas, guidance_scale)
            fut_o, prod_o = [], []
            for i in main_steps:
                j = min(range(len(spec)), key=lambda j: abs(spec_sigmas[j] - sigmas[i]))
                fut_o.append(_overlap(spec[j], true[i], top_fraction))
                prod_o.append(_overlap(spec[j] * true[i - 1], true[i], top_fraction))
            result["by_k"][str(k)] = {"future_overlap": sum(fut_o) / len(fut_o) if fut_o else None,
                                      "product_overlap": sum(prod_o) / len(prod_o) if prod_o else None}
        return result
    except (ImportError, AttributeError, ForetellError) as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
