"""SpecDiff method: config validation, levels, blend weights, importance, speculative schedule."""

import math

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specdiff import SpecDiffConfig
from foretell.specdiff.importance import TokenImportance
from foretell.specdiff.levels import C1, C2, C3, assign_levels, blend_weights, num_computed
from foretell.specdiff.speculative import euler_next_input, guided_velocity, speculative_sigmas


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(cache_rate=1.0), "cache_rate"),
        (dict(cache_rate=-0.1), "cache_rate"),
        (dict(speculative_steps=0), "speculative_steps"),
        (dict(score="attention"), "product, history, future"),
        (dict(reuse_mass=1.5), "reuse_mass"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(feature_source="latest"), "steps, computed"),
        (dict(cf_scale=-0.5), "cf_scale"),
        (dict(score_norm="softmax"), "mean, rank"),
    ],
)
def test_bad_config_raises_clear_error(kwargs, needle):
    with pytest.raises(ForetellError, match=needle):
        SpecDiffConfig(**kwargs)


def test_blend_weights_uniform_steps_match_paper():
    # features made at T = t+1, t+2, t+3 with uniform spacing 0.1; weights ~ exp(-i) * i
    hist = torch.tensor([[0.6], [0.7], [0.8]], dtype=torch.float64)
    w = blend_weights(hist, 0.5)[:, 0]
    raw = [math.exp(-1) * 1, math.exp(-2) * 2, math.exp(-3) * 3]
    expected = [r / sum(raw) for r in raw]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert [round(float(v), 2) for v in w] == [0.47, 0.34, 0.19]


def test_blend_weights_partial_history_and_non_uniform():
    hist = torch.tensor([[0.6, 0.9], [0.8, float("nan")], [float("nan"), float("nan")]], dtype=torch.float64)
    w = blend_weights(hist, 0.5)
    a, b = math.exp(-1) * 0.1, math.exp(-2) * 0.3
    assert torch.allclose(w[:, 0], torch.tensor([a / (a + b), b / (a + b), 0.0]), atol=1e-6)
    assert torch.allclose(w[:, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_assign_levels_hand_computed():
    scores = torch.tensor([10, 1, 2, 0.5, 8, 3, 0.2, 6], dtype=torch.float64)
    # C1: top-2 = tokens 0 and 4. Total mass 30.7, 10% = 3.07; ascending 0.2, 0.5, 1 (cum 1.7), 2 (cum 3.7 > 3.07)
    levels = assign_levels(scores, 2, 0.10)
    assert levels.tolist() == [C1, C2, C3, C2, C1, C3, C2, C3]
    assert assign_levels(scores, 2, 0.10, reuse=False).tolist() == [C1, C3, C3, C3, C1, C3, C3, C3]
    assert assign_levels(scores, 2, 0.10, blend=False).tolist() == [C1, C2, C2, C2, C1, C2, C2, C2]
    assert num_computed(64, 0.75) == 16 and num_computed(10, 0.99) == 1


def test_importance_modes_and_starvation_counter():
    n = 4
    his = torch.tensor([4.0, 1.0, 1.0, 2.0])
    fut_early, fut_late = torch.tensor([1.0, 1.0, 4.0, 2.0]), torch.tensor([1.0, 4.0, 1.0, 2.0])
    scores = {}
    for mode in ("product", "history", "future"):
        imp = TokenImportance(SpecDiffConfig(score=mode, score_norm="mean"), n, torch.device("cpu"))
        imp.set_history(his)
        imp.add_future(1.0, fut_early)
        imp.add_future(0.5, fut_late)
        scores[mode] = imp.score(0.6)  # nearest speculative sigma is 0.5
    assert int(scores["history"].argmax()) == 0
    assert int(scores["future"].argmax()) == 1
    prod = scores["product"] / scores["product"].sum()
    ref = (his * fut_late) / (his * fut_late).sum()
    assert torch.allclose(prod.float(), ref, atol=1e-6)
    imp = TokenImportance(SpecDiffConfig(score="history", score_norm="mean"), n, torch.device("cpu"))
    imp.set_history(his)
    imp.update_counts(torch.tensor([C1, C2, C3, C1]))
    imp.update_counts(torch.tensor([C1, C2, C3, C3]))
    assert imp.cached_count.tolist() == [0, 2, 2, 1]
    assert torch.allclose(imp.score(0.5) / imp.history, torch.exp(torch.tensor([0.0, 2, 2, 1])).double())


def test_rank_normalisation_and_cf_scale():
    n = 4
    his = torch.tensor([0.5, 9.0, 0.1, 0.5])  # ties keep token order (stable)
    fut = torch.tensor([1.0, 2.0, 3.0, 4.0])
    imp = TokenImportance(SpecDiffConfig(score="product", score_norm="rank", cf_scale=0.5), n, torch.device("cpu"))
    imp.set_history(his)
    assert imp.history.tolist() == [1.0, 2.0, 0.5, 1.5]  # ranks 2, 4, 1, 3 times 2 / N
    imp.add_future(0.5, fut)
    imp.update_counts(torch.tensor([C1, C2, C3, C3]))
    imp.update_counts(torch.tensor([C1, C1, C3, C2]))
    expected = torch.tensor([1.0 * 0.5, 2.0 * 1.0, 0.5 * 1.5, 1.5 * 2.0]) * torch.exp(0.5 * torch.tensor([0.0, 0, 2, 2]))
    assert torch.allclose(imp.score(0.5).float(), expected, atol=1e-6)
    # mean normalisation of the same inputs: his / mean(his); cf_scale 0 switches the starvation term off
    imp = TokenImportance(SpecDiffConfig(score="history", score_norm="mean", cf_scale=0.0), n, torch.device("cpu"))
    imp.set_history(his)
    imp.update_counts(torch.tensor([C1, C2, C3, C3]))
    assert torch.allclose(imp.score(0.5), (his / his.mean()).double())


def test_speculative_schedule_and_euler():
    sig = [1.0, 0.9, 0.75, 0.5, 0.3, 0.0]
    assert speculative_sigmas(sig, 2) == [1.0, 0.75, 0.0]  # indices 0, round(2.5)=2, 5
    assert speculative_sigmas(sig, 9) == sig
    v = torch.tensor([[1.0], [3.0]])
    assert torch.equal(guided_velocity(v, 2.0), torch.tensor([[5.0]]))
    assert torch.equal(guided_velocity(v, None), v)
    x = torch.tensor([[1.0], [1.0]])
    nxt = euler_next_input(x, v, 1.0, 0.5, 2.0)
    assert torch.allclose(nxt, torch.tensor([[-1.5], [-1.5]]))


def test_feature_history_assembles_levels_from_last_step_outputs():
    from foretell.specdiff.history import FeatureHistory

    hist = FeatureHistory(3)
    for value, sigma in ((1.0, 0.8), (2.0, 0.7), (4.0, 0.6)):  # outputs of 3 main steps, 3 tokens, F = 2
        hist.update(torch.full((1, 3, 2), value), None, sigma)
    levels = torch.tensor([C1, C2, C3])
    fresh = torch.full((1, 1, 2), 9.0)
    out = hist.assemble(levels, fresh, torch.tensor([0]), 0.5)
    raw = [math.exp(-1) * 0.1, math.exp(-2) * 0.2, math.exp(-3) * 0.3]  # slots: 0.6 (4.0), 0.7 (2.0), 0.8 (1.0)
    blend = (4.0 * raw[0] + 2.0 * raw[1] + 1.0 * raw[2]) / sum(raw)
    assert torch.allclose(out[0, :, 0], torch.tensor([9.0, 4.0, blend]))
    # pushing only computed tokens keeps each token's own last computed outputs
    hist.update(fresh, torch.tensor([0]), 0.5)
    assert hist.features[:, 0, 0, 0].tolist() == [9.0, 4.0, 2.0] and hist.features[:, 0, 1, 0].tolist() == [4.0, 2.0, 1.0]
