"""Token bookkeeping after each pruning stage: positions, rope, action slots, layer-1 mapping."""

import torch

import foretell.specprune.engine as engine
from foretell.specprune import apply
from foretell.specprune.config import SpecPruneConfig

from specprune_tiny import Embedded, moved, one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


def _spy(policy, log):
    original = policy.after_layer

    def after_layer(layer_idx, state, probs, rows):
        log.append({"layer": layer_idx, "origin": state.origin.clone(), "pos": state.position_ids.clone(),
                    "cos": state.cos.clone(), "hidden": state.hidden.shape[1]})
        return original(layer_idx, state, probs, rows)

    policy.after_layer = after_layer


def test_positions_rope_and_action_slots_follow_the_kept_tokens():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = apply(vla, SpecPruneConfig())
    h.observe(images, torch.zeros(7))
    log = []
    _spy(h.policy, log)
    vla.predict_action(moved(images), ids, proprio)
    lay = vla.layout(ids.shape[1])
    full_cos, _ = vla.backbone.rotary_emb(torch.zeros(1, 1, 64), torch.arange(lay.length).unsqueeze(0))
    assert log[0]["hidden"] == lay.length
    assert log[2]["hidden"] < lay.length  # pruned after layers 0/1
    for entry in log:
        # original positions survive, with gaps, and rope matches those positions
        assert torch.equal(entry["pos"][0], entry["origin"])
        assert torch.equal(entry["cos"], full_cos[:, entry["origin"]])
        assert torch.all(entry["origin"][1:] > entry["origin"][:-1])
        # every non-visual token (BOS, proprio, instruction, action slots, STOP) is still there
        kept = set(entry["origin"].tolist())
        non_visual = set(range(lay.length)) - set(range(1, 33))
        assert non_visual <= kept
    h.remove()


def test_layer1_scores_map_to_original_patches(monkeypatch):
    """Layer-0 and layer-1 scores are functions of the ORIGINAL patch index; after layer-0 pruning
    the rows are renumbered, so using row numbers as patch indices (the released code's defect)
    would select different patches."""
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    g = torch.Generator().manual_seed(7)
    score0 = torch.rand(200, generator=g)
    score1 = torch.rand(200, generator=g)

    def fake_scores(layer, state, rows):
        table = score0 if layer.self_attn.layer_idx == 0 else score1
        s = table[state.origin].clone()
        s[state.row_kinds < 0] = 0.0
        return (s / s.sum()).expand(4, len(rows), -1)

    monkeypatch.setattr(engine, "score_rows", fake_scores)
    cfg = SpecPruneConfig(use_frame_diff=False, use_global=False, use_dynamic_layers=False,
                          topk_coarse=(3 / 16, 2 / 16), layer0_multiplier=3)
    h = apply(vla, cfg)
    log = []
    _spy(h.policy, log)
    vla.predict_action(images, ids, proprio)
    after0 = set(log[1]["origin"].tolist())
    after1 = set(log[2]["origin"].tolist())
    expected0, expected1 = set(), set()
    for view, k in ((range(1, 17), 3), (range(17, 33), 2)):
        view = torch.tensor(list(view))
        top0 = view[torch.argsort(score0[view], descending=True)]
        expected0 |= set(top0[: 3 * k].tolist())
        survivors = top0[: 3 * k]
        top1 = survivors[torch.argsort(score1[survivors], descending=True)][:k]
        expected1 |= set(top1.tolist()) | set(top0[:k].tolist())
    assert after0 & set(range(1, 33)) == expected0
    assert after1 & set(range(1, 33)) == expected1
    assert h.records[-1].visual_kept == len(expected1)
    h.remove()


def test_global_set_carries_last_layer_choice_to_next_query():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = apply(vla, SpecPruneConfig(use_dynamic_layers=False, topk_coarse=(1 / 16, 1 / 16), global_topk=(2 / 16, 2 / 16)))
    h.observe(images, torch.zeros(7))
    vla.predict_action(moved(images), ids, proprio)
    chosen = torch.cat(list(h.policy.global_origins.values()))
    assert chosen.numel() == 4
    log = []
    _spy(h.policy, log)
    vla.predict_action(moved(images), ids, proprio)
    assert set(chosen.tolist()) <= set(log[-1]["origin"].tolist())
    h.remove()
    h2 = apply(vla, SpecPruneConfig(use_dynamic_layers=False, use_global=False))
    vla.predict_action(moved(images), ids, proprio)
    assert h2.policy.global_origins == {}
    h2.remove()


def test_dynamic_layer_pruning_respects_floor_and_fine_mode():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    cfg = SpecPruneConfig(importance_layers=(0, 1, 2), drop_layers=(3, 4), drop_keep_fraction=0.5, drop_floor=4 / 32,
                          controller_start_step=1)
    h = apply(vla, cfg)
    h.observe(images, torch.tensor([1.0, 0, 0.5, 0, 0, 0, 1]))  # fast: stays coarse
    vla.predict_action(images, ids, proprio)
    per_layer = h.records[-1].visual_per_layer
    assert per_layer[4] == max(round(0.5 * per_layer[3]), 4) and per_layer[4] < per_layer[3]
    assert per_layer[3] == max(round(0.5 * per_layer[2]), 4)
    h.observe(images, torch.zeros(7))  # slow -> fine mode: no layer dropping
    assert h.mode == "fine"
    vla.predict_action(images, ids, proprio)
    per_layer = h.records[-1].visual_per_layer
    assert per_layer[2] == per_layer[3] == per_layer[4]
    assert h.stats()["mode_fraction_fine"] == 0.5
    h.remove()


def test_scoring_attention_is_the_layers_own_attention_map():
    from foretell.specprune.engine import _run_layer, score_rows
    from foretell.specprune.importance import query_attention

    x = Embedded(tiny_vla())
    layer = x.vla.backbone.layers[1]
    state, rows = x.state(), x.instruction_rows
    with torch.no_grad():
        recomputed = query_attention(layer, x.emb, (x.cos, x.sin), rows)
        eager = x.eager_attention(layer)
        _run_layer(layer, state, None, capture=True)
        captured = score_rows(layer, state, rows)
    assert captured.shape == (4, len(rows), x.lay.length)
    assert torch.allclose(captured, eager[0][:, rows], atol=1e-6)
    assert torch.allclose(captured, recomputed, atol=1e-6)
    assert torch.allclose(captured.sum(-1), torch.ones(4, len(rows)))


def test_split_layer_equals_full_layer_then_gather():
    """Layers that prune run split: keys/values from every token, queries/o_proj/MLP only for kept
    rows. The kept rows must match running the whole layer and gathering afterwards."""
    from foretell.specprune.engine import PruningPolicy, _run_layer, _run_layer_split

    x = Embedded(tiny_vla())
    vla = x.vla
    keep = torch.tensor([0, 3, 5, 8, 20, 33] + list(range(34, x.lay.length)))

    class KeepSome(PruningPolicy):
        def after_layer(self, layer_idx, state, probs, rows):
            return keep

    with torch.no_grad():
        full, split = x.state(), x.state()
        _run_layer(vla.backbone.layers[0], full, None, capture=False)
        full.gather(keep)
        _run_layer_split(vla.backbone.layers[0], split, KeepSome(), 0, None)
    assert torch.equal(split.origin, keep) and torch.equal(split.position_ids[0], keep)
    assert torch.allclose(split.hidden, full.hidden, atol=1e-5)
