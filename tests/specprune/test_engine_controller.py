"""Action-aware controller on hand-made action sequences, and the re-query flag."""

import torch

from foretell.specprune import apply
from foretell.specprune.config import SpecPruneConfig
from foretell.specprune.controller import ActionAwareController
from foretell.specprune.methods import build_method

from specprune_tiny import one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)

FAST = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # transport: |v| = 1
SLOW = [0.2, 0.1, 0.0, 0.0, 0.0, 0.0, -1.0]  # |v| < 0.4: fine
DESCEND = [0.3, 0.3, -0.5, 0.0, 0.0, 0.0, -1.0]  # |v| = 0.66: not slow enough to enter fine
ALIGN = [0.05, 0.05, 0.05, 0.1, 0.0, 0.0, 1.0]  # slow xy, z and rotation
LIFT = [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0]  # v_z > 0.2: exit fine
TURN = [0.5, 0.0, 0.0, 0.4, 0.0, 0.0, 1.0]  # |w| > 0.3: exit only when the queue is empty


def _run(ctrl, seq, **kw):
    return [(ctrl.update(torch.tensor(a), **kw), ctrl.mode) for a in seq]


def test_enter_fine_and_hysteresis():
    ctrl = ActionAwareController(SpecPruneConfig(controller_start_step=1))
    out = _run(ctrl, [FAST, FAST, SLOW, FAST, DESCEND, FAST])
    assert [m for _, m in out] == ["coarse", "coarse", "fine", "fine", "fine", "fine"]  # fast moves do not exit
    assert [s for s, _ in out] == [False, False, True, False, False, False]  # switch reported once
    out = _run(ctrl, [LIFT, FAST, ALIGN, SLOW])
    assert [m for _, m in out] == ["coarse", "coarse", "fine", "fine"]
    assert [s for s, _ in out] == [False, False, True, False]


def test_rotation_exit_needs_empty_queue():
    ctrl = ActionAwareController(SpecPruneConfig(controller_start_step=1))
    _run(ctrl, [SLOW])
    assert ctrl.mode == "fine"
    _run(ctrl, [TURN], queue_empty=False)
    assert ctrl.mode == "fine"
    _run(ctrl, [TURN], queue_empty=True)
    assert ctrl.mode == "coarse"


def test_start_step_and_disabled_controller():
    ctrl = ActionAwareController(SpecPruneConfig(controller_start_step=3))
    assert [m for _, m in _run(ctrl, [SLOW, SLOW, SLOW])] == ["coarse", "coarse", "fine"]
    ctrl.reset_state()
    assert ctrl.mode == "coarse" and ctrl.steps == 0
    off = ActionAwareController(SpecPruneConfig(use_controller=False, controller_start_step=1))
    assert [m for _, m in _run(off, [SLOW, ALIGN])] == ["coarse", "coarse"]


def test_handle_requery_flag_and_fine_mode_keeps_more_tokens():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = apply(vla, SpecPruneConfig(controller_start_step=1, use_dynamic_layers=False, use_global=False))
    h.observe(images, FAST)
    h.observe(images, FAST)
    assert not h.requery_needed
    vla.predict_action(images, ids, proprio)  # all patches identical to the past frame
    coarse_kept = h.records[-1].visual_kept
    h.observe(images, SLOW)
    assert h.requery_needed and h.mode == "fine"
    vla.predict_action(images, ids, proprio)
    assert not h.requery_needed  # cleared by the re-query
    assert h.records[-1].mode == "fine" and h.records[-1].visual_kept > coarse_kept
    h.reset_state()
    assert h.mode == "coarse" and not h.requery_needed
    h.remove()
    nc = build_method("specprune_no_controller", vla)
    for _ in range(12):
        nc.observe(images, SLOW)
        assert not nc.requery_needed
    assert nc.mode == "coarse"
    nc.remove()
