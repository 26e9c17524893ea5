"""Peers at a fixed visual-token budget, and the method registry."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune.methods import ALL_METHOD_NAMES, METHOD_NAMES, build_method

from specprune_tiny import moved, one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


def _queries(vla, h, images, ids, proprio, n=3):
    outs = []
    for step in range(n):
        img = moved(images, seed=step)
        outs.append(vla.predict_action(img, ids, proprio))
        h.observe(img, torch.ones(7))
    return outs


@pytest.mark.parametrize("name", ["fastv", "random", "vla_cache", "fastv_layer0"])
def test_peers_keep_exactly_the_budget(name):
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = build_method(name, vla, token_budget=10, seed=0)
    _queries(vla, h, images, ids, proprio)
    rec = h.records[-1]
    assert rec.visual_kept == 10
    if name == "fastv":
        assert rec.visual_per_layer == [32, 32, 32, 10, 10]  # full up to layer K=2
    elif name in ("random", "fastv_layer0"):                 # both prune after layer 0
        assert rec.visual_per_layer == [32, 10, 10, 10, 10]
    else:
        assert rec.visual_per_layer == [10] * 5 and rec.extra_keys == 22  # 22 reused tokens' K/V
        assert h.records[0].visual_per_layer == [32] * 5  # nothing cached at the first query
    assert h.stats()["llm_macs_fraction"] < 1.0
    h.remove()


def test_vla_cache_reuse_is_exact_for_unchanged_frames():
    # identical inputs: the previous query's K/V of the reused tokens equal what they would be now,
    # so the result matches the full model up to floating-point summation order
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    ref = vla.predict_action(images, ids, proprio)
    h = build_method("vla_cache", vla, token_budget=8)
    vla.predict_action(images, ids, proprio)
    out = vla.predict_action(images, ids, proprio)
    assert h.records[-1].extra_keys == 24
    assert torch.allclose(out, ref, atol=1e-5)
    h.remove()
    r = build_method("random", vla, token_budget=8)
    assert not torch.allclose(vla.predict_action(images, ids, proprio), ref, atol=1e-3)
    r.remove()


def test_random_is_seeded():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    outs = []
    for seed in (0, 0, 1):
        h = build_method("random", vla, token_budget=6, seed=seed)
        outs.append(vla.predict_action(images, ids, proprio))
        h.remove()
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_registry_builds_every_method_and_rejects_bad_names():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    macs = {}
    assert set(ALL_METHOD_NAMES) - set(METHOD_NAMES) == {"fastv_layer0"}
    for name in ALL_METHOD_NAMES:
        h = build_method(name, vla, token_budget=12)
        _queries(vla, h, images, ids, proprio, n=2)
        s = h.stats()
        assert s["queries"] == 2 and len(s["llm_seconds"]) == 2 and s["visual_tokens_total"] == 32
        assert 0 < s["llm_macs_fraction"] <= 1.0
        macs[name] = s["llm_macs_fraction"]
        h.remove()
    assert macs["random"] == pytest.approx(macs["fastv_layer0"], rel=0.01)   # same budget, same pruning layer
    assert macs["fastv_layer0"] < macs["fastv"]
    with pytest.raises(ForetellError, match="unknown method 'fastvv'; accepted: full, specprune"):
        build_method("fastvv", vla)
    with pytest.raises(ForetellError, match="token_budget"):
        build_method("random", vla, token_budget=33)
    with pytest.raises(ForetellError, match="already applied"):
        h = build_method("full", vla)
        try:
            build_method("random", vla)
        finally:
            h.remove()


def test_specprune_budget_caps_kept_tokens_and_ablations_differ():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = build_method("specprune", vla, token_budget=5)
    _queries(vla, h, images, ids, proprio)
    assert h.records[-1].visual_kept <= 5
    h.remove()
    ng = build_method("specprune_no_global", vla)
    assert ng.policy.cfg.use_global is False and ng.policy.cfg.use_controller is True
    ng.remove()
