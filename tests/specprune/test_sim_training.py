"""Demonstrations and behaviour cloning on the testbed: deterministic, labels are expert chunks."""

import numpy as np
import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune.train import TrainConfig, collect_demonstrations, load_policy, make_tokenizer, train

TINY = dict(episodes=2, steps=3, batch_size=4, image_size=32, patch_size=8, hidden_size=32, num_layers=2,
            num_heads=2, num_kv_heads=1, intermediate_size=64, vision_dim=16, action_head_hidden=32, warmup=1)


def test_demonstrations_are_deterministic_and_well_formed():
    cfg = TrainConfig(**TINY)
    tok = make_tokenizer()
    a, b = collect_demonstrations(cfg, tok), collect_demonstrations(cfg, tok)
    for k in ("third", "wrist", "proprio", "ids", "actions"):
        np.testing.assert_array_equal(a[k], b[k])
    n = len(a["actions"])
    assert a["third"].shape == (n, 32, 32, 3) and a["actions"].shape == (n, 8, 7)
    assert np.all(np.abs(a["actions"]) <= 1.0)
    assert a["ids"].shape[1] == 12 and (a["ids"] > 1).any(axis=1).all()   # real words, no unknowns only


def test_training_is_deterministic(tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "a", log=lambda m: None)
    train(cfg, tmp_path / "b", log=lambda m: None)
    (va, _), (vb, tok) = load_policy(tmp_path / "a"), load_policy(tmp_path / "b")
    for (name, pa), pb in zip(va.state_dict().items(), vb.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert tok.vocab_size == make_tokenizer().vocab_size
    assert (tmp_path / "a" / "training.json").is_file()


def test_bad_training_config_is_rejected():
    with pytest.raises(ForetellError, match="loss"):
        TrainConfig(loss="huber").check()
    with pytest.raises(ForetellError, match="steps"):
        TrainConfig(steps=0).check()
