"""Attention output and attention received per key without storing the probabilities (GPU path).

received[k] = sum over batch, heads and queries of softmax(q k^T * scale)[q, k]
            = sum_q exp(q.k * scale - lse_q), with lse_q the log-sum-exp of query q's logits.
The output and lse come from one fused SDPA kernel (flash, else memory-efficient; without either, plain
SDPA and a chunked log-sum-exp pass). The per-key sums come from a second pass that recomputes q.k and
needs no PV matmul and no softmax tensor: a Triton kernel that keeps every tile on chip ("triton"), or
large chunks of one bf16 matmul whose extra columns subtract lse_q in the fp32 accumulator ("sdpa").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_CPU_BYTES = 256 * 1024 * 1024  # logits held at once off CUDA
_GPU_SHARE = 0.25  # share of the free GPU memory the logits of one chunk may take
_GPU_BYTES_MAX = 4 * 1024**3

_triton_state: dict = {}  # "kernel": the compiled-on-demand kernel or None; "error": why it is off
_fused_lse_ok: dict = {}  # device -> whether the fused kernel's lse passed the one-time row-sum check
_chunk_bytes: dict = {}


def chunk_bytes(device: torch.device) -> int:
    """Bytes one chunk of logits may take: a quarter of the free memory on CUDA when first asked
    (capped at 4 GiB, at least 256 MiB), else 256 MiB."""
    if device.type != "cuda":
        return _CPU_BYTES
    key = str(device)
    if key not in _chunk_bytes:
        free, _ = torch.cuda.mem_get_info(device)
        _chunk_bytes[key] = int(max(_CPU_BYTES, min(_GPU_BYTES_MAX, free * _GPU_SHARE)))
    return _chunk_bytes[key]


def scoring_state() -> dict:
    """What the fused scoring path decided in this process (for reports): Triton on/off and why, and
    whether each device's fused-kernel lse passed its check."""
    return {"triton": _triton_state.get("kernel") is not None if "kernel" in _triton_state else None,
            "triton_error": _triton_state.get("error"), "fused_lse_ok": dict(_fused_lse_ok)}


def sdpa_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """(out, lse) of softmax attention, lse (B, H, Sq) float32, from a fused kernel; lse is None when no
    fused kernel that returns it accepts these inputs (then ``out`` is plain SDPA)."""
    if q.device.type == "cuda":
        ops = torch.ops.aten
        try:
            res = ops._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
            return res[0], res[1]
        except (RuntimeError, AttributeError, TypeError):
            pass
        try:
            res = ops._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)
            return res[0], res[1][:, :, : q.shape[2]]
        except (RuntimeError, AttributeError, TypeError):
            pass
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False, scale=scale), None


def _rows(q: torch.Tensor, k: torch.Tensor, budget: int) -> tuple[int, int]:
    """(heads, queries) per chunk so that one chunk of logits stays under ``budget`` bytes."""
    b, h, sq, _ = q.shape
    per_query = b * k.shape[2] * q.element_size()
    rows = max(1, budget // per_query)
    if rows >= sq:
        return max(1, min(h, rows // sq)), sq
    return 1, rows


def lse_chunked(q: torch.Tensor, k: torch.Tensor, scale: float, budget: int) -> torch.Tensor:
    """log-sum-exp of every query's logits, (B, H, Sq) float32, in chunks of at most ``budget`` bytes."""
    b, h, sq, _ = q.shape
    heads, rows = _rows(q, k, budget)
    out = torch.empty(b, h, sq, dtype=torch.float32, device=q.device)
    for h0 in range(0, h, heads):
        kc = k[:, h0 : h0 + heads]
        for m0 in range(0, sq, rows):
            s = torch.matmul(q[:, h0 : h0 + heads, m0 : m0 + rows] * scale, kc.transpose(-1, -2))
            out[:, h0 : h0 + heads, m0 : m0 + rows] = torch.logsumexp(s.float(), dim=-1)
    return out


def received_matmul(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float, budget: int) -> torch.Tensor:
    """sum_{b,h,q} exp(q.k * scale - lse_q) per key, (Sk,) float32, in chunks of one matmul each.

    q and k get extra columns [-hi, -lo, 0...] and [1, 1, 0...] (hi + lo = lse_q, each exact in the input
    dtype), so the matmul returns the log-probabilities, accumulated in float32 and rounded once; exp_
    runs in place and the sum is taken in float32.
    """
    b, h, sq, d = q.shape
    dt = q.dtype
    pad = 8 - d % 8 if d % 8 else 8  # two extra columns, the width kept a multiple of 8 (tensor cores)
    hi = lse.to(dt)
    lo = (lse - hi.float()).to(dt)
    qa = torch.cat([q * scale, -hi[..., None], -lo[..., None], q.new_zeros(b, h, sq, pad - 2)], dim=-1)
    ones = k.new_ones(b, h, k.shape[2], 2)
    ka = torch.cat([k, ones, k.new_zeros(b, h, k.shape[2], pad - 2)], dim=-1)
    heads, rows = _rows(q, k, budget)
    received = None
    for h0 in range(0, h, heads):
        kc = ka[:, h0 : h0 + heads].transpose(-1, -2)
        for m0 in range(0, sq, rows):
            p = torch.matmul(qa[:, h0 : h0 + heads, m0 : m0 + rows], kc).exp_()
            part = p.sum(dim=(0, 1, 2), dtype=torch.float32)
            received = part if received is None else received + part
    return received


def disable_triton(reason: str) -> None:
    """Switch the Triton kernel off for this process ("triton" then runs the matmul pass)."""
    _triton_state["kernel"], _triton_state["error"] = None, reason


def triton_available(device: torch.device) -> bool:
    """Whether the Triton received-kernel can run on ``device`` (CUDA and an importable Triton)."""
    if device.type != "cuda":
        return False
    if "kernel" not in _triton_state:
        try:
            _triton_state["kernel"] = _build_triton_kernel()
        except Exception as exc:  # no Triton, or one this code does not compile with
            _triton_state["kernel"], _triton_state["error"] = None, f"{type(exc).__name__}: {exc}"
    return _triton_state["kernel"] is not None


def received_triton(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`received_matmul` as one Triton kernel: each program owns a block of keys of one (batch,
    head) and walks over the queries, so no logits leave the chip. (Sk,) float32."""
    import triton

    kernel = _triton_state.get("kernel") or _build_triton_kernel()
    b, h, sq, d = q.shape
    sk = k.shape[2]
    block_d = max(16, triton.next_power_of_2(d))
    block_n = 128 if block_d <= 64 else 64
    block_m = 64
    out = torch.empty(b * h, sk, dtype=torch.float32, device=q.device)
    lse = lse.float()
    grid = (triton.cdiv(sk, block_n), b * h)
    kernel[grid](
        q, k, lse, out, h, sq, sk, d, scale * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), q.stride(3),
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        lse.stride(0), lse.stride(1), lse.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
    )
    return out.sum(0)


def _build_triton_kernel():
    import triton
    import triton.language as tl

    # sizes are not specialised on (one compile serves every sequence length); strides are
    @triton.jit(do_not_specialize=["heads", "sq", "sk", "d"])
    def received_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, heads, sq, sk, d, scale_log2,
                        sqb, sqh, sqs, sqd, skb, skh, sks, skd, slb, slh, sls,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_n = tl.program_id(0)
        bh = tl.program_id(1)
        bi = bh // heads
        hi = bh % heads
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        mask_n = offs_n < sk
        mask_d = offs_d < d
        k = tl.load(k_ptr + bi * skb + hi * skh + offs_n[:, None] * sks + offs_d[None, :] * skd,
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for m0 in range(0, sq, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            mask_m = offs_m < sq
            q = tl.load(q_ptr + bi * sqb + hi * sqh + offs_m[:, None] * sqs + offs_d[None, :] * sqd,
                        mask=mask_m[:, None] & mask_d[None, :], other=0.0)
            lse = tl.load(lse_ptr + bi * slb + hi * slh + offs_m * sls, mask=mask_m, other=float("inf"))
            s = tl.dot(q, tl.trans(k))
            p = tl.exp2(s * scale_log2 - lse[:, None] * 1.4426950408889634)
            acc += tl.sum(p, axis=0)
        tl.store(out_ptr + bh * sk + offs_n, acc, mask=mask_n)

    return received_kernel


def fused_attention_with_received(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "triton", keys: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(out (B, H, Sq, d), received float32, the backend that ran) without a probability tensor.

    ``received`` covers every key, or the ``keys`` = (start, count) range only (the others are not
    scored at all). ``backend`` "triton" uses the Triton kernel where :func:`triton_available` (CUDA,
    float16/bfloat16 inputs), else "sdpa": the chunked-matmul pass of :func:`received_matmul`.
    """
    scale = q.shape[-1] ** -0.5
    out, lse = sdpa_with_lse(q, k, v, scale)
    dev = str(q.device)
    if lse is None or _fused_lse_ok.get(dev) is False:
        lse = lse_chunked(q, k, scale, chunk_bytes(q.device))
    check = dev not in _fused_lse_ok
    scored = k if keys is None or check else k.narrow(2, keys[0], keys[1])
    received, used = None, "sdpa"
    small = max(q.numel(), k.numel()) < 2**31  # the kernel's offsets are 32-bit
    if backend == "triton" and small and q.dtype in (torch.float16, torch.bfloat16) and triton_available(q.device):
        try:
            received, used = received_triton(q, scored, lse, scale), "triton"
        except Exception as exc:  # e.g. the kernel does not compile for this GPU: the matmul pass runs
            _triton_state["kernel"], _triton_state["error"] = None, f"{type(exc).__name__}: {exc}"
    if received is None:
        received = received_matmul(q, scored, lse, scale, chunk_bytes(q.device))
    if check:
        # once per device (one host read), over all keys: every query's probabilities sum to one, so
        # the received attention sums to B*H*Sq; a fused kernel whose lse means something else fails
        rows = q.shape[0] * q.shape[1] * q.shape[2]
        _fused_lse_ok[dev] = abs(float(received.sum()) / rows - 1.0) < 1e-2
        if not _fused_lse_ok[dev]:
            return fused_attention_with_received(q, k, v, backend, keys)
        if keys is not None:
            received = received.narrow(0, *keys)
    return out, received, used
