"""The GPU scoring paths (fused SDPA output + received attention without a probability tensor) against
the explicit path on the CPU, the Triton kernel under Triton's interpreter where Triton is installed,
and the score_backend / score_layer_stride knobs."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.attention import attention_and_received, attention_with_received
from foretell.specdiff.received import fused_attention_with_received, lse_chunked, received_matmul

from _method_tiny import inputs, one_thread, sample, scheduler, tiny_flux, tiny_sd3

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)


def _qkv(b=2, h=3, sq=11, sk=29, d=16, seed=0, dtype=torch.float32, heads_inner=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=gen) * 2 for n in (sq, sk, sk))
    if heads_inner:  # FLUX's layout: (B, S, H, d) transposed to (B, H, S, d)
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("budget", [1 << 30, 3 * 29 * 4 * 2, 1])  # one chunk, head chunks, query chunks
@pytest.mark.parametrize("heads_inner", [False, True])
def test_lse_and_matmul_pass_equal_the_explicit_probabilities(budget, heads_inner):
    q, k, v = _qkv(heads_inner=heads_inner)
    scale = q.shape[-1] ** -0.5
    ref = torch.logsumexp(q @ k.transpose(-1, -2) * scale, dim=-1)
    lse = lse_chunked(q, k, scale, budget)
    torch.testing.assert_close(lse, ref, rtol=1e-6, atol=1e-6)
    _, received = attention_with_received(q, k, v)
    got = received_matmul(q, k, lse, scale, budget)
    assert got.dtype == torch.float32 and got.shape == (29,)
    torch.testing.assert_close(got.double(), received, rtol=1e-5, atol=1e-5)
    assert got.sum().item() == pytest.approx(2 * 3 * 11, rel=1e-5)  # each query's row sums to one


def test_sdpa_backend_equals_explicit_on_cpu():
    q, k, v = _qkv(d=24)  # a head width that is not a multiple of 8: the matmul pass pads it
    out_e, rec_e, used_e = attention_and_received(q, k, v, "explicit")
    out_s, rec_s, used_s = attention_and_received(q, k, v, "sdpa")
    assert (used_e, used_s) == ("explicit", "sdpa")
    torch.testing.assert_close(out_s, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rec_s.double(), rec_e, rtol=1e-5, atol=1e-5)
    # "auto" keeps the explicit path on the CPU; "triton" falls back to "sdpa" off CUDA
    assert attention_and_received(q, k, v, "auto")[2] == "explicit"
    assert fused_attention_with_received(q, k, v, "triton")[2] == "sdpa"


def test_bfloat16_matmul_pass_is_as_close_to_float32_as_the_explicit_bfloat16_path():
    q, k, v = _qkv(sq=40, sk=90, d=64, seed=1)
    _, exact = attention_with_received(q, k, v)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    _, explicit16 = attention_with_received(qb, kb, vb, compute_dtype=torch.bfloat16)
    lse = lse_chunked(qb, kb, 0.125, 1 << 30)
    fused16 = received_matmul(qb, kb, lse, 0.125, 1 << 30).double()
    err_explicit = ((explicit16 - exact).abs() / exact.clamp_min(1e-3)).max().item()
    err_fused = ((fused16 - exact).abs() / exact.clamp_min(1e-3)).max().item()
    assert err_fused < 0.05 and err_fused <= 1.5 * err_explicit + 1e-3


_TRITON_SCRIPT = textwrap.dedent("""
    import torch
    import foretell.specdiff.received as R
    from foretell.specdiff.attention import attention_with_received
    for b, h, sq, sk, d, seed in ((2, 3, 37, 50, 64, 0), (1, 2, 70, 130, 128, 1), (2, 2, 20, 33, 24, 2)):
        g = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(b, h, n, d, generator=g).half() for n in (sq, sk, sk))
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
        _, ref = attention_with_received(q.float(), k.float(), v.float())
        lse = R.lse_chunked(q.float(), k.float(), d ** -0.5, 1 << 30)
        R._triton_state["kernel"] = R._build_triton_kernel()
        got = R.received_triton(q, k, lse, d ** -0.5)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
        part = R.received_triton(q, k.narrow(2, 5, 20), lse, d ** -0.5)  # a key range (a view with an offset)
        torch.testing.assert_close(part.double(), ref[5:25], rtol=1e-5, atol=1e-5)
    print("ok")
""")


def test_triton_kernel_matches_the_explicit_path_in_the_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


@pytest.mark.parametrize("make", [tiny_sd3, tiny_flux], ids=["sd3", "flux"])
def test_sdpa_backend_samples_like_the_explicit_backend(make):
    model = make()
    data = inputs(model, batch=1)
    results = {}
    for backend in ("explicit", "sdpa"):
        s = scheduler()
        cfg = SpecDiffConfig(cache_rate=0.5, warmup_steps=2, score_backend=backend)
        with apply(model, cfg, scheduler=s, guidance_scale=3.0) as h:
            x = sample(model, s, data, steps=8)
            st = h.stats()
        results[backend] = (x, [step["level_counts"] for step in st["per_step"]], st["score_backends"])
    (x_e, lv_e, used_e), (x_s, lv_s, used_s) = results["explicit"], results["sdpa"]
    torch.testing.assert_close(x_s, x_e, rtol=1e-4, atol=1e-4)
    assert lv_s == lv_e
    assert set(used_e) == {"explicit"} and set(used_s) == {"sdpa"} and used_e["explicit"] == used_s["sdpa"] > 0


def test_default_on_cpu_is_the_explicit_path():
    model = tiny_sd3()
    s = scheduler()
    with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2), scheduler=s, guidance_scale=3.0) as h:
        sample(model, s, inputs(model), steps=8)
        used = h.stats()["score_backends"]
        h.reset_stats()
        assert h.stats()["score_backends"] == {}
    assert set(used) == {"explicit"}


def test_layer_stride_scores_every_nth_layer():
    model = tiny_sd3(dual=True)  # 2 joint blocks + 1 attn2 = 3 wrapped attention layers
    counts, received = {}, {}
    for stride in (1, 2, 5):
        s = scheduler()
        with apply(model, SpecDiffConfig(cache_rate=0.5, warmup_steps=2, score_layer_stride=stride), scheduler=s,
                   guidance_scale=3.0) as h:
            layers = len(h._hook.processors)
            sample(model, s, inputs(model), steps=8)
            counts[stride] = h.stats()["score_backends"]["explicit"]
            received[stride] = h._hook.run.importance.history
    assert layers == 3
    scored_calls = counts[1] // 3
    assert counts[2] == 2 * scored_calls and counts[5] == scored_calls  # layers {0, 2} and {0}
    assert not torch.equal(received[1], received[5])


@pytest.mark.parametrize("field,value", [("score_backend", "flash"), ("score_backend", None),
                                         ("score_layer_stride", 0), ("score_layer_stride", 1.5),
                                         ("score_layer_stride", True)])
def test_scoring_knobs_are_validated(field, value):
    with pytest.raises(ForetellError, match=field):
        SpecDiffConfig(**{field: value})


def test_scoring_knobs_default_to_the_exact_method():
    cfg = SpecDiffConfig()
    assert cfg.score_backend == "auto" and cfg.score_layer_stride == 1
    assert cfg.as_dict()["score_backend"] == "auto"


def test_a_fused_lse_that_fails_the_row_sum_check_is_replaced(monkeypatch):
    import foretell.specdiff.received as R

    q, k, v = _qkv(seed=4)
    real = R.sdpa_with_lse

    def wrong_units(q, k, v, scale):  # e.g. a kernel that returned log2-sum-exp
        out, _ = real(q, k, v, scale)
        return out, lse_chunked(q, k, scale, 1 << 30) / 0.6931471805599453

    monkeypatch.setattr(R, "sdpa_with_lse", wrong_units)
    monkeypatch.setattr(R, "_fused_lse_ok", {})
    _, ref = attention_with_received(q, k, v)
    for _ in range(2):  # the check runs once; later calls use the chunked lse without checking
        _, received, _ = fused_attention_with_received(q, k, v, "sdpa")
        torch.testing.assert_close(received.double(), ref, rtol=1e-5, atol=1e-5)
    assert R._fused_lse_ok == {"cpu": False}


def test_a_triton_kernel_that_fails_to_launch_falls_back_to_the_matmul_pass(monkeypatch):
    import foretell.specdiff.received as R

    def broken(*args):
        raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(R, "triton_available", lambda device: True)
    monkeypatch.setattr(R, "received_triton", broken)
    monkeypatch.setattr(R, "_triton_state", {"kernel": object()})
    q, k, v = _qkv(seed=5, dtype=torch.bfloat16)
    _, received, used = fused_attention_with_received(q, k, v, "triton")
    _, ref = attention_with_received(q, k, v, compute_dtype=torch.bfloat16)
    assert used == "sdpa" and R._triton_state["kernel"] is None and "no kernel image" in R._triton_state["error"]
    torch.testing.assert_close(received.double(), ref, rtol=0.03, atol=0.03)
    assert R.scoring_state()["triton"] is False


def test_level_counts_without_a_host_read_equal_bincount():
    from foretell.specdiff.hooks import count_levels

    levels = torch.randint(0, 3, (257,), generator=torch.Generator().manual_seed(0))
    for lv in (levels, torch.zeros(5, dtype=torch.long), torch.full((4,), 2, dtype=torch.long)):
        assert torch.equal(count_levels(lv), torch.bincount(lv, minlength=3))


@pytest.mark.parametrize("backend", ["explicit", "sdpa"])
def test_a_key_range_scores_only_those_keys(backend, monkeypatch):
    import foretell.specdiff.received as R

    q, k, v = _qkv(seed=6)
    _, ref = attention_with_received(q, k, v)
    for checked in ({}, {"cpu": True}):  # the first call per device scores all keys for its check
        monkeypatch.setattr(R, "_fused_lse_ok", dict(checked))
        out, received, _ = attention_and_received(q, k, v, backend, keys=(7, 15))
        assert received.shape == (15,)
        torch.testing.assert_close(received.double(), ref[7:22], rtol=1e-5, atol=1e-5)
