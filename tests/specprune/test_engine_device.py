"""Device following that a CPU can check: the model moves its inputs to its own device (a model on
the ``meta`` device stands in for a GPU: mixing its tensors with CPU ones raises), and the engine's
per-query state is kept where the handle puts it."""

import pytest
import torch

from foretell.specprune.engine import token_kinds
from foretell.specprune.frame_diff import FrameHistory
from foretell.specprune.methods import build_method

from specprune_tiny import one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


def test_model_moves_cpu_inputs_to_its_device():
    images, ids, proprio = tiny_inputs()
    vla = tiny_vla().to("meta")
    assert vla.device.type == "meta"
    out = vla.predict_action(images, ids, proprio)
    assert out.device.type == "meta" and tuple(out.shape) == (1, vla.config.chunk, vla.config.action_dim)
    assert vla.forward(images, ids, proprio).device.type == "meta"
    assert vla.loss(images, ids, proprio, torch.zeros(1, vla.config.chunk, vla.config.action_dim)).device.type == "meta"


def test_inputs_already_on_the_device_are_not_copied():
    images, ids, proprio = tiny_inputs()
    vla = tiny_vla()
    moved, ids2, prop2 = vla.inputs_to_device(images, ids, proprio)
    assert all(moved[v] is images[v] for v in images) and ids2 is ids and prop2 is proprio


def test_handle_keeps_frames_on_the_model_device_and_matches_the_bare_model():
    images, ids, proprio = tiny_inputs()
    vla = tiny_vla()
    ref = vla.predict_action(images, ids, proprio)
    h = build_method("full", vla)
    assert torch.equal(h.predict_action(images, ids, proprio), ref)
    h.observe(images, torch.zeros(7))
    frame = h.history.frames["third"][-1]
    assert frame.device == vla.device and frame.dtype == torch.float32
    assert frame.data_ptr() != images["third"].data_ptr()  # a copy: the caller may reuse its buffer
    h.remove()


def test_frame_history_stores_on_the_given_device_and_returns_on_the_current_one():
    hist = FrameHistory(max_frames=3)
    frames = [torch.full((1, 3, 8, 8), float(i)) for i in range(3)]
    for f in frames:
        hist.push({"v": f}, device=torch.device("cpu"))
    back = hist.frame_back("v", frames[-1], 1)  # the newest stored frame is the current one: skipped
    assert torch.equal(back, frames[1][0]) and back.device == frames[-1].device
    assert hist.frame_back("v", frames[-1].double(), 5) is not None  # any float dtype of the current frame


def test_token_kinds_are_cached_per_device():
    vla = tiny_vla()
    lay = vla.layout(5)
    a = token_kinds(lay, torch.device("cpu"))
    assert token_kinds(lay) is a and token_kinds(lay, "cpu") is a
    meta = token_kinds(lay, "meta")
    assert meta.device.type == "meta" and meta is not a
    assert int((a >= 0).sum()) == sum(s.stop - s.start for s in lay.views.values())
