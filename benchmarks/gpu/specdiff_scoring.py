"""The ``scoring`` sub-step of check_specdiff: one attention layer at the SD3-medium and FLUX shapes,
plain SDPA against each SpecDiff ``score_backend`` (time, received-attention error against float32,
top-20% overlap), with the Triton kernel probed first in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import torch

import common


_PROBE = """
import json, sys, torch
import foretell.specdiff.received as R
from foretell.specdiff.attention import attention_with_received
res = {}
for b, h, sq, sk, d in ((2, 24, 1152, 4429, 64), (1, 24, 717, 1536, 128), (1, 3, 37, 50, 24)):
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", generator=g).bfloat16() for n in (sq, sk, sk))
    q = q.transpose(1, 2).contiguous().transpose(1, 2)
    _, ref = attention_with_received(q.float(), k.float(), v.float())
    lse = R.lse_chunked(q.float(), k.float(), d ** -0.5, 1 << 30)
    got = R.received_triton(q, k, lse, d ** -0.5).double()
    part = R.received_triton(q, k.narrow(2, 5, 20), lse, d ** -0.5).double()
    torch.cuda.synchronize()
    err = lambda a, r: float(((a - r).abs() / r.abs().clamp_min(1e-3)).max())
    res[f"{b}x{h}x{sq}x{sk}x{d}"] = max(err(got, ref), err(part, ref[5:25]))
print(json.dumps(res))
"""


def _triton_probe() -> dict:
    """The Triton kernel against the float32 explicit path in a subprocess; switched off here if it fails."""
    from foretell.specdiff import received

    if common.DEV != "cuda":
        return {"ran": False, "why": "not cuda"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
        errs = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        proc, errs = None, None
        why = f"{type(exc).__name__}: {exc}"
    ok = errs is not None and all(e < 0.02 for e in errs.values())
    out = {"ran": True, "ok": ok, "max_rel_err": errs}
    if not ok:
        out["stderr"] = proc.stderr[-3000:] if proc is not None else why
        received.disable_triton("the subprocess probe of the check failed")
    return out


def _scoring() -> dict:
    """One attention layer per shape: time of plain SDPA and of each score_backend, and each backend's
    received attention against a float32 explicit reference."""
    import torch.nn.functional as F

    from foretell.specdiff import received
    from foretell.specdiff.attention import attention_and_received, attention_with_received

    big = common.DEV == "cuda"
    out = {"triton_probe": _triton_probe()}
    shapes = ({"sd3_full": (2, 24, 4429, 4429, 64), "sd3_partial": (2, 24, 1152, 4429, 64),
               "flux_full": (1, 24, 1536, 1536, 128), "flux_partial": (1, 24, 717, 1536, 128)} if big else
              {"sd3_full": (2, 2, 72, 72, 8), "sd3_partial": (2, 2, 20, 72, 8)})
    dtype = torch.bfloat16 if big else torch.float32
    ok = True
    for name, (b, h, sq, sk, d) in shapes.items():
        row = {"shape_bhqkd": [b, h, sq, sk, d]}
        try:
            g = torch.Generator(common.DEV).manual_seed(0)
            q, k, v = (torch.randn(b, h, n, d, device=common.DEV, generator=g) for n in (sq, sk, sk))
            q, k, v = (q * 3).to(dtype), k.to(dtype), v.to(dtype)  # logits with std ~3: peaked rows
            _, ref = attention_with_received(q.float(), k.float(), v.float())  # float32 from the same inputs
            top = max(1, sk // 5)
            ref_top = set(ref.topk(top).indices.tolist())
            row["sdpa_ms"] = 1e3 * common.timed(lambda: F.scaled_dot_product_attention(q, k, v), repeats=5)[0]
            for backend in ("explicit", "sdpa", "triton"):
                t, (o, rec, used) = common.timed(lambda: attention_and_received(q, k, v, backend), repeats=5)
                rec = rec.double()
                row[backend] = {"ms": 1e3 * t, "ran": used,
                                "max_rel_err": float(((rec - ref).abs() / ref.abs().clamp_min(1e-3)).max()),
                                "top20_overlap": len(ref_top & set(rec.topk(top).indices.tolist())) / top,
                                "out_max_abs_err": float((o.float() - F.scaled_dot_product_attention(q, k, v).float())
                                                         .abs().max())}
            ok = ok and row["triton"]["max_rel_err"] < 0.05 and row["sdpa"]["max_rel_err"] < 0.05
        except Exception as exc:
            row.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            ok = False
        out[name] = row
        if big:
            torch.cuda.empty_cache()
    out["state"] = received.scoring_state()
    out["ok"] = ok
    return out
