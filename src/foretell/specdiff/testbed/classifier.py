"""A small CNN digits classifier on the upscaled digits: class accuracy and Frechet features of samples."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from foretell.core.errors import ForetellError
from foretell.specdiff.testbed.data import load_digits_images, split_indices

FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """Two conv layers + a 64-d penultimate layer (the Frechet features) + a 10-way head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 8 * 8, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[N, 64]`` for images in [-1, 1], ``[N, 1, 32, 32]``."""
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def save(self, directory: str | Path, info: dict) -> Path:
        """Write ``classifier.safetensors`` and ``classifier.json`` (training info, test accuracy)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "classifier.safetensors"))
        (directory / "classifier.json").write_text(json.dumps(info, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> tuple["DigitsClassifier", dict]:
        """Load a classifier written by :meth:`save`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        path = directory / "classifier.safetensors"
        if not path.is_file():
            raise ForetellError(f"no digits classifier at {path}; train one with train_classifier()")
        model = cls()
        model.load_state_dict(load_file(str(path)))
        return model.eval(), json.loads((directory / "classifier.json").read_text())


def train_classifier(*, seed: int = 0, epochs: int = 15, batch_size: int = 64) -> tuple[DigitsClassifier, dict]:
    """Train on 80% of the upscaled digits (small shifts as augmentation); report held-out accuracy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digits_images()
    train_idx, test_idx = split_indices(images.shape[0], seed=seed)
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = images[train_idx], labels[train_idx]
    for _ in range(epochs):
        perm = torch.randperm(xs.shape[0], generator=gen)
        for start in range(0, xs.shape[0], batch_size):
            idx = perm[start:start + batch_size]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xs[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(xb), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    info = {"seed": seed, "epochs": epochs, "train_images": len(train_idx), "test_images": len(test_idx),
            "test_accuracy": acc}
    return model, info


_DEFAULT: list = []


def default_classifier() -> tuple[DigitsClassifier, dict]:
    """The shipped classifier from ``specdiff/assets/digits-classifier`` (trained on first use if absent)."""
    if not _DEFAULT:
        directory = Path(__file__).resolve().parents[1] / "assets" / "digits-classifier"
        if (directory / "classifier.safetensors").is_file():
            _DEFAULT.append(DigitsClassifier.load(directory))
        else:
            model, info = train_classifier()
            _DEFAULT.append((model.eval(), info))
    return _DEFAULT[0]
