"""Tiny testbed models of both classes: packing, persistence, sampler determinism, bad inputs."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specdiff.testbed.models import (DigitsDiT, DigitsModelConfig, flux_digits_config, pack,
                                              sd3_digits_config, unpack)
from foretell.specdiff.testbed.sampler import SampleConfig, make_noise, make_scheduler, sample, sample_labels


def _tiny(kind):
    torch.manual_seed(0)
    if kind == "sd3":
        return DigitsDiT(sd3_digits_config(heads=2, head_dim=16, layers=2)).eval()
    return DigitsDiT(flux_digits_config(heads=2, head_dim=16, layers=1, single_layers=1)).eval()


def test_pack_unpack_roundtrip():
    x = torch.randn(2, 1, 32, 32)
    tokens = pack(x, 2)
    assert tokens.shape == (2, 256, 4)
    assert torch.equal(unpack(tokens, 1, 32, 2), x)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_sampler_deterministic_by_seed_and_save_load(kind, tmp_path):
    model = _tiny(kind)
    assert model.cfg.image_tokens == 256
    labels = sample_labels(3)

    def run(m, seed):
        return sample(m, make_noise(m, 3, seed), labels, scheduler=make_scheduler(m, 3), guidance_scale=3.0)

    a, b, c = run(model, 1), run(model, 1), run(model, 2)
    assert a.shape == (3, 1, 32, 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    loaded = DigitsDiT.load(model.save(tmp_path / kind))
    assert torch.equal(run(loaded, 1), a)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ForetellError, match="steps must be an integer >= 1"):
        SampleConfig(steps=0)
    with pytest.raises(ForetellError, match="accepted: sd3, flux"):
        DigitsModelConfig(kind="unet")
    with pytest.raises(ForetellError, match=r"has no config.json \+ model.safetensors; pass a folder written by"):
        DigitsDiT.load(tmp_path)


def test_training_is_deterministic_for_a_seed():
    from foretell.specdiff.testbed.train import TrainConfig, train_digits_model

    cfg = sd3_digits_config(heads=2, head_dim=16, layers=1)
    runs = [train_digits_model(cfg, TrainConfig(steps=2, batch_size=4, warmup_steps=1, seed=3)) for _ in range(2)]
    (a, log_a), (b, log_b) = runs
    assert log_a["steps_done"] == 2 and not log_a["stopped_early"]
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
