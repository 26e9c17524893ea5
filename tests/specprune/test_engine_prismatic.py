"""Prismatic / OpenVLA-OFT adapter on a tiny random-init model with the same attribute structure."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune import apply
from foretell.specprune.adapter import PrismaticOFTAdapter
from foretell.specprune.config import SpecPruneConfig
from foretell.specprune.methods import build_method

from specprune_tiny import TinyL1Head, TinyPrismatic, moved, one_thread  # noqa: F401 (autouse fixture)

CHUNK, ADIM = 2, 7


def _setup():
    torch.manual_seed(0)
    vla = TinyPrismatic().eval()
    head = TinyL1Head(64, CHUNK, ADIM).eval()
    proprio_proj = torch.nn.Linear(8, 64)
    adapter = PrismaticOFTAdapter(vla, head, views=("third", "wrist"), image_size=32, patch_size=8, chunk=CHUNK,
                                  action_dim=ADIM, proprio_projector=proprio_proj, instruction_skip=2)
    g = torch.Generator().manual_seed(1)
    images = {v: torch.rand(1, 3, 32, 32, generator=g) for v in ("third", "wrist")}
    prompt = torch.randint(3, 40, (1, 9), generator=g)
    input_ids = torch.cat([torch.tensor([[1]]), prompt, torch.full((1, CHUNK * ADIM), 2), torch.tensor([[2]])], dim=1)
    return vla, adapter, images, input_ids, torch.randn(1, 8, generator=g)


def test_layout_follows_oft_order():
    vla, adapter, images, ids, proprio = _setup()
    prep = adapter.prepare(images, ids, proprio)
    lay = prep.layout
    assert lay.views == {"third": slice(1, 17), "wrist": slice(17, 33)}
    assert lay.proprio == slice(33, 34)
    assert lay.instruction == slice(36, 43)  # 9 prompt tokens, the first 2 (template) skipped
    assert lay.actions == slice(43, 57) and lay.length == 58 == prep.embeds.shape[1]
    assert prep.embeds[0, lay.actions].abs().sum() == 0  # OFT zeroes the action placeholder embeddings


def test_disabled_pruning_is_exact_and_pruning_runs_end_to_end():
    vla, adapter, images, ids, proprio = _setup()
    ref = adapter.reference_actions(images, ids, proprio)  # through LlamaModel.forward
    h = apply(vla, SpecPruneConfig(enabled=False), adapter=adapter)
    assert torch.equal(vla.predict_action(images, ids, proprio), ref)
    h.remove()
    assert vla.predict_action() == "original"  # the model's own method is back
    h = apply(vla, SpecPruneConfig(drop_layers=(3,)), adapter=adapter)
    h.observe(images, torch.zeros(7))
    out = vla.predict_action(moved(images), ids, proprio)
    assert out.shape == (1, CHUNK, ADIM)
    assert h.records[-1].visual_kept < 32 and h.stats()["llm_macs_fraction"] < 1.0
    h.remove()
    for name in ("fastv", "vla_cache", "random"):
        p = build_method(name, vla, token_budget=10, adapter=adapter)
        vla.predict_action(images, ids, proprio)
        vla.predict_action(moved(images), ids, proprio)
        assert p.records[-1].visual_kept == 10
        p.remove()


def test_prismatic_adapter_errors():
    vla, adapter, images, ids, proprio = _setup()
    with pytest.raises(ForetellError, match="vision_backbone"):
        PrismaticOFTAdapter(torch.nn.Linear(2, 2), None, image_size=32, patch_size=8, chunk=2, action_dim=7)
    with pytest.raises(ForetellError, match="missing camera view"):
        adapter.prepare({"third": images["third"]}, ids, proprio)
    with pytest.raises(ForetellError, match="action placeholders"):
        adapter.prepare(images, ids[:, :5], proprio)
