"""Shared set-up of the SpecDiff method studies in this folder (run from the repository root): a
shipped digits model, its 28-step scheduler, seeded noise and labels, and one CFG-4 sampling run."""
import torch

from foretell.specdiff.testbed.models import DigitsDiT
from foretell.specdiff.testbed.sampler import make_noise, make_scheduler, sample, sample_labels

STEPS, GUIDANCE = 28, 4.0


def digits_setup(kind: str, n: int):
    """(model, scheduler, run) for ``n`` samples of the shipped ``{kind}-digits`` model, one torch thread."""
    torch.set_num_threads(1)
    model = DigitsDiT.load(f"src/foretell/specdiff/assets/{kind}-digits")
    scheduler = make_scheduler(model, STEPS)
    noise, labels = make_noise(model, n, 0), sample_labels(n)

    def run():
        scheduler.set_timesteps(STEPS)
        return sample(model, noise, labels, scheduler=scheduler, guidance_scale=GUIDANCE)

    return model, scheduler, run
