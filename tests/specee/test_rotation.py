"""The sweep scripts' timing protocol: rotating order, position-wise agreement, tokens per pass."""

import pytest
import torch

from foretell.specee.rotation import time_in_rotation


def test_rotation_order_agreement_and_passes():
    calls = []

    def variant(name, new, passes):
        def run(pi, ids):
            calls.append((pi, name))
            return torch.cat([ids, torch.tensor([new])], 1), passes
        return run

    inputs = [torch.tensor([[1, 2]]), torch.tensor([[3]]), torch.tensor([[4, 5, 6]])]
    res = time_in_rotation({"full": variant("full", [7, 8, 9, 10], 4), "half": variant("half", [7, 0, 9, 0], 2),
                            "short": variant("short", [7, 8], 1)}, inputs)
    assert [n for _, n in calls] == ["full", "half", "short", "half", "short", "full", "short", "full", "half"]
    assert [pi for pi, _ in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert res["full"]["agreement"] == 1.0 and res["half"]["agreement"] == 0.5 and res["short"]["agreement"] == 0.5
    assert res["full"]["tokens_per_pass"] == 1.0 and res["half"]["tokens_per_pass"] == 2.0
    assert res["short"]["tokens_per_pass"] == 2.0 and res["full"]["speedup"] == 1.0
    assert all(m["tokens_per_s"] > 0 for m in res.values())
    assert [res[n]["new_tokens"] for n in ("full", "half", "short")] == [12, 12, 6]


def test_rotation_needs_its_reference():
    with pytest.raises(ValueError, match="reference variant 'full'"):
        time_in_rotation({"a": lambda pi, ids: (ids, 1)}, [torch.tensor([[1]])])
