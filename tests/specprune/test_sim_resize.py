"""Progressive resizing of the BC policy (train at a small image size first, continue at the target)."""

import hashlib

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune.resize import carry_optimizer_state, resample_grid, resized_vla
from foretell.specprune.train import TrainConfig, load_policy, train

from specprune_tiny import one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)

TINY = dict(episodes=2, steps=6, batch_size=4, image_size=32, patch_size=8, hidden_size=32, num_layers=2,
            num_heads=2, num_kv_heads=1, intermediate_size=64, vision_dim=16, action_head_hidden=32, warmup=1,
            dagger_episodes=1)


def test_resample_grid_keeps_linear_ramps_and_row_major_order():
    g, new = 4, 6
    centres = (torch.arange(g, dtype=torch.float32) + 0.5) / g
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    table = torch.stack([rows.flatten(), 3 * cols.flatten()], dim=1)        # [g*g, 2]: y ramp, x ramp
    out = resample_grid(table, new)
    assert out.shape == (new * new, 2)
    c = (torch.arange(new, dtype=torch.float32) + 0.5) / new
    r2, c2 = torch.meshgrid(c, c, indexing="ij")
    inside = ((c >= centres[0]) & (c <= centres[-1]))
    keep = (inside[:, None] & inside[None, :]).flatten()                      # bilinear is exact between centres
    torch.testing.assert_close(out[keep, 0], r2.flatten()[keep])
    torch.testing.assert_close(out[keep, 1], 3 * c2.flatten()[keep])
    assert torch.equal(resample_grid(table, g), table)
    with pytest.raises(ForetellError, match="square"):
        resample_grid(torch.zeros(5, 2), 3)


def test_resized_vla_carries_every_weight_and_runs_at_the_new_size():
    vla = tiny_vla(seed=2, stem="conv", film=True, coord_embed=True)
    big = resized_vla(vla, 48)
    assert big.config.image_size == 48 and big.config.patches_per_view == 36 and not big.training
    old, new = vla.state_dict(), big.state_dict()
    assert old.keys() == new.keys()
    for k in old:
        if k == "vision.patch_pos":
            assert new[k].shape == (36, old[k].shape[1])
        else:
            assert torch.equal(old[k], new[k]), k
    images, ids, prop = tiny_inputs(size=48)
    assert big.predict_action(images, ids, prop).shape == (1, 2, 7)
    with pytest.raises(ForetellError, match="48"):
        big.predict_action(*tiny_inputs(size=32))


def test_optimizer_state_is_carried_and_patch_table_moments_resampled():
    vla = tiny_vla(seed=1, stem="conv", coord_embed=True).train()
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-3)
    vla(*tiny_inputs()).pow(2).mean().backward()
    opt.step()
    big = resized_vla(vla, 48)
    new_opt = torch.optim.AdamW(big.parameters(), lr=1e-3)
    carry_optimizer_state(opt, dict(vla.named_parameters()), new_opt, dict(big.named_parameters()))
    old_named, new_named = dict(vla.named_parameters()), dict(big.named_parameters())
    for name, p in new_named.items():
        st_old, st_new = opt.state[old_named[name]], new_opt.state[p]
        assert st_new["exp_avg"].shape == p.shape and torch.equal(st_new["step"], st_old["step"])
        if name != "vision.patch_pos":
            assert torch.equal(st_new["exp_avg_sq"], st_old["exp_avg_sq"]), name
    assert (new_opt.state[new_named["vision.patch_pos"]]["exp_avg_sq"] >= 0).all()
    big(*tiny_inputs(size=48)).pow(2).mean().backward()
    new_opt.step()                                                              # the carried state is usable


def test_warm_start_training_switches_size_and_is_deterministic(tmp_path):
    cfg = TrainConfig(**TINY, warm_start_size=16, warm_start_steps=4, dagger_at="3,5")
    runs = [train(cfg, tmp_path / name, log=lambda m: None) for name in ("a", "b")]
    digest = [hashlib.sha256((tmp_path / n / "model.safetensors").read_bytes()).hexdigest() for n in ("a", "b")]
    assert digest[0] == digest[1]
    assert [d["image_size"] for d in runs[0]["dagger"]] == [16, 32]       # DAgger at the size trained then
    assert runs[0]["warm_start"]["size"] == 16 and runs[0]["warm_start"]["steps"] == 4
    vla, _ = load_policy(tmp_path / "a")
    assert vla.config.image_size == 32 and vla.vision.patch_pos.shape[0] == 16


def test_bad_warm_start_config_is_rejected():
    with pytest.raises(ForetellError, match="warm_start_size"):
        TrainConfig(image_size=96, warm_start_size=60).check()      # not a multiple of the patch size
    with pytest.raises(ForetellError, match="warm_start_size"):
        TrainConfig(image_size=96, warm_start_size=96, warm_start_steps=10).check()
    with pytest.raises(ForetellError, match="warm_start_steps"):
        TrainConfig(image_size=96, warm_start_size=64, warm_start_steps=0).check()
    assert TrainConfig().size_at(0) == 64
    assert [TrainConfig(image_size=96, warm_start_size=64, warm_start_steps=5).size_at(s) for s in (4, 5)] == [64, 96]
