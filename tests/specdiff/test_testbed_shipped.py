"""The shipped digits models load and draw digits the shipped classifier recognises."""

import pytest
import torch

from foretell.specdiff.bench import resolve_model
from foretell.specdiff.testbed.classifier import default_classifier
from foretell.specdiff.testbed.data import load_digits_images, split_indices
from foretell.specdiff.testbed.metrics import class_accuracy
from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels


def test_shipped_classifier_recognises_held_out_digits():
    clf, info = default_classifier()
    images, labels = load_digits_images()
    _, test_idx = split_indices(images.shape[0], seed=info["seed"])
    acc = class_accuracy(clf, images[test_idx], labels[test_idx])
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-6)
    assert acc > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd3-digits", "flux-digits"])
def test_shipped_model_draws_recognisable_digits(name):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = resolve_model(name)
    assert model.cfg.image_tokens >= 256
    clf, _ = default_classifier()
    labels = sample_labels(10)
    images = sample(model, make_noise(model, 10, 0), labels, scheduler=make_scheduler(model, 12), guidance_scale=4.0)
    assert images.shape == (10, 1, 32, 32)
    assert class_accuracy(clf, images, labels) >= 0.7
