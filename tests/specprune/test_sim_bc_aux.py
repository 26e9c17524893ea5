"""Training recipe pieces: conv stem + FiLM + coordinate embedding, auxiliary targets and losses, DAgger."""

import numpy as np
import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune import apply
from foretell.specprune.bc_aux import (REL_DIM, AuxHeads, attention_target_loss, relative_target,
                                       run_with_action_attention, target_masks)
from foretell.specprune.config import SpecPruneConfig
from foretell.specprune.model import OFTStyleVLA, VLAConfig
from foretell.specprune.sim import expert_action, initial_state, render_views, sample_layout, transition
from foretell.specprune.train import TrainConfig, collect_on_policy, make_tokenizer, to_model_inputs

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
             intermediate_size=64, vocab_size=24, vision_dim=16, action_head_hidden=32)


def _vla(**kw):
    torch.manual_seed(0)
    return OFTStyleVLA(VLAConfig(**{**SMALL, "stem": "conv", "film": True, "coord_embed": True, **kw})).eval()


def _inputs(ids):
    g = torch.Generator().manual_seed(1)
    images = {v: torch.rand(1, 3, 32, 32, generator=g) for v in ("third", "wrist")}
    return images, torch.tensor([ids]), torch.rand(1, 8, generator=g)


def test_film_sees_word_order_and_pruning_disabled_stays_exact():
    vla = _vla()
    with torch.no_grad():  # make the FiLM modulation non-trivial (it starts as the identity)
        for head in vla.film.heads:
            head.weight.normal_(0, 0.5)
    images, ids, prop = _inputs([2, 3, 4, 5, 6, 7])
    swapped = torch.tensor([[2, 6, 4, 5, 3, 7]])   # the two "colour" words exchanged
    a = vla.predict_action(images, ids, prop)
    assert not torch.allclose(a, vla.predict_action(images, swapped, prop))   # not a bag of words
    h = apply(vla, SpecPruneConfig(enabled=False))
    try:
        assert torch.equal(vla.predict_action(images, ids, prop), a)
    finally:
        h.remove()


def test_film_needs_conv_stem():
    with pytest.raises(ForetellError, match="film"):
        VLAConfig(**SMALL, film=True)


def test_target_masks_and_relative_target_follow_the_state():
    layout = sample_layout(1000, 0)
    state = initial_state(layout)
    masks = target_masks(state, 64, 8)
    assert masks["third"].shape == (2, 8, 8)
    b, p = layout.target_block, layout.pad_xy[layout.target_pad]
    # the pad's patches in the third-person view: the one holding the pad centre is covered
    col = int((p[0] + 1.15) / 2.3 * 8)
    row = int((1.45 - p[1]) / 2.6 * 8)
    assert masks["third"][1, row, col] > 0.5
    assert 0 < masks["third"][0].sum() < masks["third"][1].sum()   # the block is smaller than the pad
    rel = relative_target(state)
    np.testing.assert_allclose(rel[:2], state.block_xy[b] - state.gripper_xyz[:2], atol=1e-6)
    while state.held != b and not state.done:     # the expert grasps: the block is then at the gripper
        transition(state, expert_action(state))
    assert np.allclose(relative_target(state)[:2], 0.0, atol=1e-6)


def test_attention_supervision_rewards_attention_on_the_targets():
    vla = _vla()
    lay = vla.layout(6)
    images, ids, prop = _inputs([2, 3, 4, 5, 6, 7])
    embeds = vla.embed_inputs(images, ids, prop)
    hidden, maps = run_with_action_attention(vla, embeds, lay, (0, 1), heads=3)
    torch.testing.assert_close(hidden, vla.run_backbone(embeds))   # same pass as the model's own
    assert maps[0].shape == (1, 3, lay.actions.stop - lay.actions.start, lay.length)
    masks = {v: torch.zeros(1, 2, 4, 4) for v in lay.views}
    masks["third"][0, 0, 1, 2] = 1.0
    masks["third"][0, 1, 3, 3] = 1.0
    on = torch.zeros_like(maps[0])
    on[:, 0, :, lay.views["third"].start + 1 * 4 + 2] = 1.0
    on[:, 1, :, lay.views["third"].start + 3 * 4 + 3] = 1.0
    on[:, 2, :, lay.proprio.start] = 1.0
    uniform = torch.full_like(maps[0], 1.0 / lay.length)
    assert attention_target_loss([on], lay, masks) < 0.01 < attention_target_loss([uniform], lay, masks)
    seg, rel = AuxHeads(32).losses(embeds, hidden, lay, masks, torch.zeros(1, REL_DIM))
    assert seg.ndim == 0 and rel.shape == (REL_DIM,)


def test_dagger_labels_visited_states_with_the_expert():
    cfg = TrainConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                      intermediate_size=64, vision_dim=16, action_head_hidden=32, horizon=12)
    tok = make_tokenizer()
    torch.manual_seed(0)
    from foretell.specprune.train import vla_config
    vla = OFTStyleVLA(vla_config(cfg, tok.vocab_size))
    data, rate = collect_on_policy(vla, tok, cfg, first_episode=0, episodes=1)
    assert len(data["actions"]) == 12 and 0.0 <= rate <= 1.0      # an untrained policy times out
    layout = sample_layout(1000, 0)
    first = expert_action(initial_state(layout))
    np.testing.assert_allclose(data["actions"][0, 0], first, atol=1e-6)   # label = expert, not the policy
    im, _, _ = to_model_inputs(data["third"][:1], data["wrist"][:1], data["ids"][:1], data["proprio"][:1])
    np.testing.assert_array_equal(data["third"][0], render_views(initial_state(layout), 32)["third"])
    assert im["third"].shape == (1, 3, 32, 32)
