"""The Python API refuses bad input with one ForetellError line (an API audit's cases)."""

import math

import numpy as np
import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune import SpecPruneConfig
from foretell.specprune.methods import build_method

from specprune_tiny import tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("changes, needle", [
    ({"topk_coarse": (math.nan, 0.1)}, "topk_coarse=(nan, 0.1) must be a list of finite numbers"),
    ({"speed_scale": math.nan}, "speed_scale=nan must be a finite number"),
    ({"speed_scale": -1.0}, "speed_scale=-1.0 must be > 0"),
    ({"enter_speed": -0.4}, "enter_speed=-0.4 must be >= 0"),
    ({"exit_rot": math.inf}, "exit_rot=inf must be a finite number"),
    ({"controller_start_step": -3}, "controller_start_step=-3 must be >= 0"),
    ({"importance_layers": (0.5,)}, "importance_layers=(0.5,) must be a list of layer indices"),
    ({"bogus": 1}, "unknown SpecPruneConfig field(s) ['bogus']; accepted: "),
])
def test_config_values(changes, needle):
    with pytest.raises(ForetellError) as err:
        SpecPruneConfig().replace(**changes)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_history_holds_the_largest_frame_gap():
    vla = tiny_vla()
    with build_method("specprune", vla, config=SpecPruneConfig(frame_gap_max=20)) as h:
        assert h.history.max_frames >= 21
    with build_method("full", vla) as h:
        assert h.history.max_frames == 8


@pytest.mark.parametrize("action, needle", [
    (None, "executed_action is a NoneType"),
    ("left", "executed_action is a str"),
    (torch.ones(3), "executed_action is 3 value(s); expected the 7 finite numbers"),
    (torch.ones(2, 7), "executed_action is 14 value(s)"),
    (torch.tensor([math.nan] + [0.0] * 6), "executed_action is not finite"),
])
def test_observe_checks_the_executed_action(action, needle):
    vla = tiny_vla()
    images, _, _ = tiny_inputs()
    with build_method("specprune", vla) as h:
        with pytest.raises(ForetellError, match="observe: ") as err:
            h.observe(images, action)
        assert needle in str(err.value)
        assert not h.history.frames            # nothing stored from the refused call


@pytest.mark.parametrize("image, needle", [
    (torch.rand(1, 3, 40, 40), "is (1, 3, 40, 40) float32; expected a float tensor [1, 3, 32, 32]"),
    (np.zeros((32, 32, 3), dtype=np.uint8), "is (32, 32, 3) uint8"),
    ([[0.5]], "is list"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "uint8"),
])
def test_observe_checks_the_frames(image, needle):
    vla = tiny_vla()
    images, _, _ = tiny_inputs()
    with build_method("specprune", vla) as h:
        with pytest.raises(ForetellError) as err:
            h.observe({**images, "third": image}, torch.zeros(7))
        assert needle in str(err.value)


@pytest.mark.parametrize("change, needle", [
    (lambda im, p: ({**im, "third": (im["third"] * 255).to(torch.uint8)}, p), "is uint8; expected floats in [0, 1]"),
    (lambda im, p: ({**im, "third": im["third"] * 255}, p), "has values outside [0, 1]"),
    (lambda im, p: ({**im, "wrist": im["wrist"].masked_fill(im["wrist"] > 0.5, math.nan)}, p), "outside [0, 1] (or NaN)"),
    (lambda im, p: (im, p.masked_fill(p > 0, math.nan)), "proprio holds NaN or inf"),
])
@pytest.mark.parametrize("method", ["full", "specprune"])
def test_predict_action_checks_pixel_values(change, needle, method):
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    images, proprio = change(images, proprio)
    with build_method(method, vla) as h, pytest.raises(ForetellError) as err:
        h.predict_action(images, ids, proprio)
    assert needle in str(err.value)


@pytest.mark.parametrize("kwargs, needle", [
    ({"token_budget": 2.5}, "token_budget=2.5 must be a whole number"),
    ({"token_budget": "10"}, "token_budget='10' must be a whole number"),
    ({"token_budget": True}, "token_budget=True must be a whole number"),
    ({"seed": -1}, "seed=-1 must be an integer in [0, 2**32)"),
    ({"seed": "x"}, "seed='x' must be an integer"),
])
def test_build_method_arguments(kwargs, needle):
    with pytest.raises(ForetellError) as err:
        build_method("random", tiny_vla(), **kwargs)
    assert needle in str(err.value)
