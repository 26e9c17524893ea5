"""Multiply-accumulate counting with PyTorch's own FLOP counter (matmuls, convs, SDPA).

Used to report how much of a model's arithmetic an acceleration method actually removed.
"""

from __future__ import annotations

from typing import Any, Callable


def count_macs(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` under ``torch.utils.flop_counter.FlopCounterMode`` and return (MACs, result).

    FLOPs are counted as 2 per multiply-accumulate, so MACs = FLOPs // 2. Element-wise ops are
    not counted, which matches how papers in this field report MACs. Scaled-dot-product attention
    runs on its math backend while counting: the fused CPU kernel is invisible to the counter.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        result = fn()
    return counter.get_total_flops() // 2, result


def linear_macs(tokens: int, in_features: int, out_features: int) -> int:
    """MACs of a dense layer applied to ``tokens`` vectors."""
    return int(tokens) * int(in_features) * int(out_features)


def attention_macs(q_tokens: int, kv_tokens: int, dim: int) -> int:
    """MACs of softmax(QK^T)V for ``q_tokens`` queries over ``kv_tokens`` keys, total width ``dim``."""
    return 2 * int(q_tokens) * int(kv_tokens) * int(dim)
