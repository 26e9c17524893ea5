"""Exact exit check without the full-vocabulary product: a cheap screen with a proven error bound.

SpecEE's exit condition is "the layer's full-vocabulary argmax is one of the k draft candidates".
The candidates' exact logits are k dot products; what remains is to show that no other row of the
LM head beats their maximum ``m``. :class:`LMHeadScreen` keeps an int8 copy of the LM head (per-row
scales; 1/4 of the fp32 bytes, and decoding on a CPU is memory-bound) and computes approximate
logits ``a_j`` with a rigorous bound on their error,

    |W_j h - a_j| <= |a_j| 2^-7                       (bf16 output rounding)
                   + ||Wq_j|| ||h - bf16(h)|| (1+1e-3) (the input cast to bf16)
                   + ||W_j - Wq_j|| ||h||             (int8 quantisation, Cauchy-Schwarz)
                   + 1e-4 ||Wq_j|| ||h||              (fp32 accumulation, n u << 1e-4),

so a row whose upper bound ``a_j + err_j`` is below ``m`` cannot be the argmax, and a row whose
lower bound ``a_j - err_j`` reaches ``m`` proves that the argmax is not a candidate. Only the rows
left undecided get an exact fp32 dot product (most likely first; a check that fails stops at the
first row that beats ``m``). The decision equals the full product's (up to exact floating-point ties, which count as
"not a candidate"), and the argmax among the candidates is the token the full product would give.
The bound's terms are all measured: the tests check them against the fp32 product.

When the int8 kernel (``torch.ops.aten._weight_int8pack_mm``, CPU) is missing, the screen uses an
fp16 copy with the same bound (2^-10 output rounding).
"""

from __future__ import annotations

import torch


def _int8_kernel_available(rows: int, width: int) -> bool:
    """Whether the CPU int8 weight-only kernel gives right results for a (rows, width) weight.

    The kernel reads out of bounds unless the width is a multiple of 16 (measured on torch 2.13:
    garbage or a crash otherwise), so other widths use the fp16 screen. A small probe against the
    fp32 product guards against other kernel changes."""
    if width % 16 or not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return False
    try:
        cpu = torch.device("cpu")                              # a probe of a CPU kernel
        g = torch.Generator(device=cpu).manual_seed(0)
        x = torch.randn(2, width, generator=g, device=cpu).to(torch.bfloat16)
        q = torch.randint(-127, 128, (rows, width), generator=g, dtype=torch.int8, device=cpu)
        s = torch.rand(rows, generator=g, device=cpu).add_(0.5).to(torch.bfloat16)
        got = torch.ops.aten._weight_int8pack_mm(x, q, s).float()
        ref = x.float() @ (q.float() * s.float()[:, None]).T
        return bool(((got - ref).abs() <= ref.abs() * 2.0 ** -7 + 1e-3 * width).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class LMHeadScreen:
    """Decides "full-vocab argmax is among the candidates" exactly, from a quantised LM head."""

    def __init__(self, weight: torch.Tensor, kind: str | None = None):
        w = weight.detach().float()
        self.weight = weight
        self.kind = kind or ("int8" if w.device.type == "cpu" and _int8_kernel_available(*w.shape) else "fp16")
        if self.kind not in ("int8", "fp16"):
            raise ValueError(f"screen kind must be 'int8' or 'fp16', got {self.kind!r}")
        if self.kind == "int8" and not _int8_kernel_available(*w.shape):
            raise ValueError(f"the int8 kernel cannot screen a {tuple(w.shape)} head here; use kind='fp16'")
        if self.kind == "int8":
            self.scale = (w.abs().amax(1).clamp_min(1e-12) / 127).to(torch.bfloat16)
            self.q = torch.round(w / self.scale.float()[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            wq = self.q.float() * self.scale.float()[:, None]
            self.rounding = 2.0 ** -7
            self.in_dtype = torch.bfloat16
        else:
            self.q = w.half().contiguous()
            wq = self.q.float()
            self.rounding = 2.0 ** -10
            self.in_dtype = torch.float16
        self.q_norm = wq.norm(dim=1)                            # ||Wq_j||
        self.quant_err = (w - wq).norm(dim=1)                   # ||W_j - Wq_j||
        self.checks = self.rows_checked = 0

    def approx(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate logits (q, V) of normalised states ``x`` (q, d) and their error bound (q, V)."""
        x = x.float()
        xc = x.to(self.in_dtype)
        if self.kind == "int8":
            a = torch.ops.aten._weight_int8pack_mm(xc, self.q, self.scale).float()
        else:
            a = torch.nn.functional.linear(xc, self.q).float()
        h_norm = x.norm(dim=-1, keepdim=True)
        cast_err = (x - xc.float()).norm(dim=-1, keepdim=True)
        err = a.abs() * self.rounding + self.q_norm * (cast_err * (1 + 1e-3) + 1e-4 * h_norm) \
            + self.quant_err * h_norm
        return a, err

    @torch.no_grad()
    def argmax_among(self, x: torch.Tensor, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For normalised states ``x`` (q, d) and candidate ids ``cands`` (q, k): (ok (q,) bool, top (q,)).

        ``ok[i]``: the full-vocabulary argmax of row i is one of its candidates; then ``top[i]`` is
        that argmax (the best candidate). Rows that are not ok get ``top`` -1."""
        x = x.float()
        rows = self.weight[cands].float()                                    # (q, k, d)
        cand_logits = torch.matmul(rows, x.unsqueeze(-1)).squeeze(-1)       # exact, (q, k)
        best, arg = cand_logits.max(-1)
        top = cands.gather(-1, arg.unsqueeze(-1)).squeeze(-1)
        a, err = self.approx(x)
        upper = (a + err).scatter_(-1, cands, float("-inf"))
        lower = (a - err).scatter_(-1, cands, float("-inf"))
        ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        self.checks += x.shape[0]
        for i in range(x.shape[0]):
            if float(lower[i].max()) >= float(best[i]):        # a non-candidate provably reaches it
                ok[i] = False
                continue
            surv = torch.nonzero(upper[i] >= best[i]).flatten()
            if surv.numel():                                   # undecided rows: exact, most likely first
                surv = surv[torch.argsort(upper[i, surv], descending=True)]
                for s in range(0, surv.numel(), 256):
                    part = surv[s:s + 256]
                    self.rows_checked += part.numel()
                    if bool((self.weight[part].float() @ x[i] >= best[i]).any()):
                        ok[i] = False
                        break
        return ok, torch.where(ok, top, torch.full_like(top, -1))
