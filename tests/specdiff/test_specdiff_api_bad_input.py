"""The Python API refuses bad input with one ForetellError line (an API audit's cases)."""

import math

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.testbed.models import DigitsDiT, DigitsModelConfig, sd3_digits_config
from foretell.specdiff.testbed.sampler import SampleConfig, make_noise, make_scheduler, sample, sample_labels

from _method_tiny import inputs, one_thread, scheduler, tiny_sd3

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.mark.parametrize("changes, needle", [
    ({"blend": "no"}, "blend must be True or False, got 'no'"),
    ({"speculative_uncond": 1}, "speculative_uncond must be True or False"),
    ({"max_cached_count": True}, "max_cached_count must be a number, got True"),
    ({"speculative_steps": True}, "speculative_steps must be a number, got True"),
])
def test_config_types(changes, needle):
    with pytest.raises(ForetellError, match="") as err:
        SpecDiffConfig(**changes)
    assert needle in str(err.value)


@pytest.mark.parametrize("scale", [math.nan, math.inf, "3", -1.0])
def test_apply_guidance_scale(scale):
    with pytest.raises(ForetellError, match="guidance_scale must be a finite number >= 0"):
        apply(tiny_sd3(), SpecDiffConfig(), scheduler=scheduler(), guidance_scale=scale)


def test_cfg_scale_with_a_batch_without_cfg_is_one_line():
    model = tiny_sd3()
    data = inputs(model, batch=1, cfg=False)                        # batch 1: no [uncond, cond] pair
    s = scheduler()
    s.set_timesteps(4)
    with apply(model, SpecDiffConfig(warmup_steps=1), scheduler=s, guidance_scale=3.0):
        with pytest.raises(ForetellError, match=r"guidance_scale=3.0 means classifier-free guidance, whose batch is "
                                                r"\[uncond, cond\] \(even size\); the transformer got a batch of 1"):
            with torch.no_grad():
                for t in s.timesteps:
                    model(hidden_states=data["x"], timestep=t.expand(1), return_dict=False, **data["cond"])


@pytest.mark.parametrize("changes, needle", [
    ({"image_size": 30, "patch_size": 4}, "image_size 30 must be a multiple of patch_size 4"),
    ({"heads": 0}, "heads must be an integer >= 1, got 0"),
    ({"layers": 0}, "layers must be an integer >= 1"),
    ({"single_layers": -1}, "single_layers must be an integer >= 0"),
    ({"image_size": 2.5}, "image_size must be an integer >= 1, got 2.5"),
    ({"head_dim": 7}, "head_dim must be even"),
    ({"qk_norm": "bogus"}, "unknown qk_norm 'bogus'; accepted: rms_norm"),
    ({"scheduler_shift": -1.0}, "scheduler_shift must be a finite number > 0"),
])
def test_digits_model_config(changes, needle):
    base = sd3_digits_config(heads=2, head_dim=16, layers=1).__dict__ | changes
    with pytest.raises(ForetellError) as err:
        DigitsModelConfig(**base)
    assert needle in str(err.value)


@pytest.mark.parametrize("changes, needle", [
    ({"steps": 2.5}, "steps must be an integer >= 1, got 2.5"),
    ({"guidance_scale": math.nan}, "guidance_scale must be a finite number >= 1"),
    ({"seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
])
def test_sample_config(changes, needle):
    with pytest.raises(ForetellError) as err:
        SampleConfig(**changes)
    assert needle in str(err.value)


def _sample_args(model):
    return make_noise(model, 2, 0), sample_labels(2)


@pytest.mark.parametrize("change, needle", [
    (lambda n, y: (n, torch.tensor([3, 11])), "labels must be digits 0..9 (10 is the null class CFG uses), got values [11]"),
    (lambda n, y: (n, torch.tensor([10, 1])), "got values [10]"),
    (lambda n, y: (n, y.float()), "labels are (2,) float32; expected an integer tensor [2]"),
    (lambda n, y: (n, [0, 1]), "labels are list"),
    (lambda n, y: (n, y.view(2, 1)), "labels are (2, 1) int64"),
    (lambda n, y: (n[:, :, :8, :8], y), "noise has shape (2, 1, 8, 8); expected [N >= 1, 1, 32, 32]"),
    (lambda n, y: (n[:0], y[:0]), "noise has shape (0, 1, 32, 32)"),
])
def test_sample_inputs(change, needle):
    torch.manual_seed(0)
    model = DigitsDiT(sd3_digits_config(heads=2, head_dim=16, layers=1)).eval()
    noise, labels = change(*_sample_args(model))
    with pytest.raises(ForetellError) as err:
        sample(model, noise, labels, scheduler=make_scheduler(model, 2), guidance_scale=2.0)
    assert needle in str(err.value)


def test_sample_guidance_and_scheduler():
    torch.manual_seed(0)
    model = DigitsDiT(sd3_digits_config(heads=2, head_dim=16, layers=1)).eval()
    noise, labels = _sample_args(model)
    with pytest.raises(ForetellError, match="guidance_scale must be a finite number >= 0, got nan"):
        sample(model, noise, labels, scheduler=make_scheduler(model, 2), guidance_scale=math.nan)
    with pytest.raises(ForetellError, match="scheduler must be the FlowMatchEulerDiscreteScheduler"):
        sample(model, noise, labels, scheduler=None)
    with pytest.raises(ForetellError, match="steps must be an integer >= 1, got 0"):
        make_scheduler(model, 0)
