"""Tabletop simulator: seeded determinism, rendering, action semantics, grasp and success rules."""

import numpy as np
import pytest

from foretell.core.errors import ForetellError
from foretell.specprune.sim import TabletopEnv, initial_state, render_views, sample_layout, transition, vocabulary
from foretell.specprune.sim.env import GRASP_XY, POS_STEP, ROT_STEP
from foretell.specprune.sim.task import BLOCK_HEIGHT, COLOUR_NAMES, COLOURS


def _act(**kw):
    a = np.zeros(7)
    a[6] = -1.0
    for k, v in kw.items():
        a[{"x": 0, "y": 1, "z": 2, "yaw": 5, "grip": 6}[k]] = v
    return a


def test_layout_is_deterministic_per_seed_and_index():
    a, b = sample_layout(3, 5), sample_layout(3, 5)
    assert a.instruction == b.instruction
    np.testing.assert_array_equal(a.block_xy, b.block_xy)
    np.testing.assert_array_equal(a.pad_xy, b.pad_xy)
    others = [sample_layout(4, 5), sample_layout(3, 6)]
    assert all(not np.allclose(o.block_xy, a.block_xy) for o in others)


def test_instruction_names_target_colours_and_uses_the_vocabulary():
    words = set(vocabulary())
    for i in range(20):
        lay = sample_layout(0, i)
        toks = lay.instruction.split()
        assert set(toks) <= words
        assert lay.block_colours[lay.target_block] in toks and lay.pad_colours[lay.target_pad] in toks
        assert toks.index(lay.block_colours[lay.target_block]) < len(toks) - 2  # block colour comes first
    assert set(COLOUR_NAMES) <= words


def test_views_have_the_requested_shape_and_depend_on_the_state():
    env = TabletopEnv(image_size=48)
    obs = env.reset(sample_layout(0, 0))
    assert set(obs["images"]) == {"third", "wrist"}
    for im in obs["images"].values():
        assert im.shape == (48, 48, 3) and im.dtype == np.uint8
    assert obs["proprio"].shape == (8,)
    before = {k: v.copy() for k, v in obs["images"].items()}
    obs, _, _ = env.step(_act(x=1.0))
    assert not np.array_equal(before["third"], obs["images"]["third"])   # the gripper moved in view
    assert not np.array_equal(before["wrist"], obs["images"]["wrist"])   # and the wrist camera with it
    again = render_views(env.state, 48)
    np.testing.assert_array_equal(again["third"], obs["images"]["third"])


def test_wrist_view_zooms_in_when_the_gripper_descends():
    lay = sample_layout(0, 1)
    s = initial_state(lay)
    s.gripper_xyz[:] = [*lay.block_xy[0], 0.6]
    s.gripper_yaw = float(lay.block_yaw[0])
    high = render_views(s, 64)["wrist"]
    s.gripper_xyz[2] = 0.06
    low = render_views(s, 64)["wrist"]
    rgb = np.array([int(255 * c + 0.5) for c in COLOURS[lay.block_colours[0]]])
    frac = lambda im: np.mean(np.all(np.abs(im.astype(int) - rgb) <= 2, axis=-1))
    assert frac(low) > 3 * frac(high) > 0


def test_actions_move_and_rotate_the_gripper_by_the_documented_steps():
    s = initial_state(sample_layout(1, 0))
    x0 = s.gripper_xyz.copy()
    yaw0 = s.gripper_yaw
    transition(s, _act(x=1.0, z=-0.5, yaw=0.4))
    np.testing.assert_allclose(s.gripper_xyz - x0, [POS_STEP, 0.0, -0.5 * POS_STEP], atol=1e-12)
    assert s.gripper_yaw == pytest.approx(yaw0 + 0.4 * ROT_STEP)
    transition(s, _act(x=5.0))  # actions are clipped to [-1, 1]
    assert s.gripper_xyz[0] - x0[0] == pytest.approx(2 * POS_STEP)


def _over_block(lay, i, dx=0.0):
    s = initial_state(lay)
    s.gripper_xyz[:] = [lay.block_xy[i, 0] + dx, lay.block_xy[i, 1], BLOCK_HEIGHT - 0.02]
    s.gripper_yaw = float(lay.block_yaw[i])
    return s


def test_grasp_rule_attaches_only_a_block_between_the_fingers():
    lay = sample_layout(2, 3)
    s = _over_block(lay, 1)
    transition(s, _act(grip=1.0))
    assert s.closed and s.held == 1
    transition(s, _act(grip=1.0, z=1.0, x=0.5))
    np.testing.assert_allclose(s.block_xy[1], s.gripper_xyz[:2])   # carried with the gripper
    miss = _over_block(lay, 1, dx=2 * GRASP_XY)
    transition(miss, _act(grip=1.0))
    assert miss.closed and miss.held == -1
    high = _over_block(lay, 1)
    high.gripper_xyz[2] = 0.5
    transition(high, _act(grip=1.0))
    assert high.held == -1


def test_success_only_for_the_target_block_released_inside_the_target_pad():
    lay = sample_layout(2, 4)
    tb, tp = lay.target_block, lay.target_pad
    s = _over_block(lay, tb)
    transition(s, _act(grip=1.0))
    s.gripper_xyz[:2] = lay.pad_xy[tp] + 0.05
    s.block_xy[tb] = s.gripper_xyz[:2]
    transition(s, _act(grip=1.0))
    assert not s.done
    transition(s, _act(grip=-1.0))
    assert s.success and s.done and s.held == -1
    # releasing next to the pad, or a wrong block on the pad, is no success
    s = _over_block(lay, tb)
    transition(s, _act(grip=1.0))
    s.gripper_xyz[:2] = lay.pad_xy[tp] + 0.4
    transition(s, _act(grip=-1.0))
    assert not s.success and not s.done
    other = (tb + 1) % len(lay.block_xy)
    s = _over_block(lay, other)
    transition(s, _act(grip=1.0))
    s.gripper_xyz[:2] = lay.pad_xy[tp]
    transition(s, _act(grip=-1.0))
    assert not s.success


def test_episode_ends_at_the_horizon():
    env = TabletopEnv(image_size=16, horizon=5)
    env.reset(sample_layout(0, 0))
    done = [env.step(_act())[1] for _ in range(5)]
    assert done == [False] * 4 + [True]


def test_bad_inputs_raise_clear_errors():
    env = TabletopEnv(image_size=16)
    with pytest.raises(ForetellError, match="reset"):
        env.step(_act())
    env.reset(sample_layout(0, 0))
    with pytest.raises(ForetellError, match="7 finite numbers"):
        env.step(np.zeros(6))
    with pytest.raises(ForetellError, match="seed"):
        sample_layout(-1, 0)
    with pytest.raises(ForetellError, match="image_size"):
        TabletopEnv(image_size=4)
