"""OFT-style VLA model and instruction tokenizer."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune.model import OFTStyleVLA
from foretell.specprune.tokenizer import InstructionTokenizer

from specprune_tiny import WORDS, one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


def test_predict_action_shape_and_layout():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs(batch=3)
    acts = vla.predict_action(images, ids, proprio)
    assert acts.shape == (3, 2, 7) and acts.dtype == torch.float32
    lay = vla.layout(ids.shape[1])
    assert lay.views["third"] == slice(1, 17) and lay.views["wrist"] == slice(17, 33)
    assert lay.proprio == slice(33, 34) and lay.instruction == slice(34, 34 + ids.shape[1])
    assert lay.actions.stop - lay.actions.start == 14 and lay.length == lay.actions.stop + 1
    assert vla.embed_inputs(images, ids, proprio).shape[1] == lay.length


def test_backbone_is_bidirectional():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    emb = vla.embed_inputs(images, ids, proprio)
    late = emb.clone()
    late[:, -1] += 1.0  # perturb only the STOP token (the last one)
    with torch.no_grad():
        a, b = vla.run_backbone(emb), vla.run_backbone(late)
        # the transformers LlamaModel.forward path is non-causal too and computes the same thing
        c = vla.backbone(inputs_embeds=emb).last_hidden_state
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4  # the first token sees the last one
    assert torch.equal(a, c)


def test_save_load_roundtrip(tmp_path):
    vla = tiny_vla(seed=3)
    images, ids, proprio = tiny_inputs()
    vla.save_pretrained(tmp_path / "m")
    back = OFTStyleVLA.from_pretrained(tmp_path / "m")
    assert back.config == vla.config
    assert torch.equal(back.predict_action(images, ids, proprio), vla.predict_action(images, ids, proprio))
    with pytest.raises(ForetellError, match="save_pretrained"):
        OFTStyleVLA.from_pretrained(tmp_path / "missing")


def test_l1_loss_trains():
    vla = tiny_vla().train()
    images, ids, proprio = tiny_inputs(batch=2)
    target = torch.zeros(2, 2, 7)
    loss = vla.loss(images, ids, proprio, target)
    pred = vla(images, ids, proprio)
    assert torch.allclose(loss, pred.abs().mean())
    loss.backward()
    assert vla.vision.patchify.weight.grad is not None and vla.action_slots.grad is not None
    with pytest.raises(ForetellError, match="target_actions"):
        vla.loss(images, ids, proprio, torch.zeros(2, 3, 7))


@pytest.mark.parametrize("bad", ["size", "view", "extra_view", "proprio", "ids"])
def test_bad_inputs_raise_one_line_errors(bad):
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    if bad == "size":
        images["third"] = torch.rand(1, 3, 24, 24)
    elif bad == "view":
        images.pop("wrist")
    elif bad == "extra_view":
        images["top"] = images["third"]
    elif bad == "proprio":
        proprio = torch.randn(1, 5)
    else:
        ids = ids.float()
    with pytest.raises(ForetellError) as err:
        vla.predict_action(images, ids, proprio)
    assert "\n" not in str(err.value)


def test_tokenizer_roundtrip(tmp_path):
    tok = InstructionTokenizer(WORDS)
    ids = tok.encode("Put the RED block on the green pad.")
    assert tok.decode(ids) == "put the red block on the green pad"
    assert tok.encode("put the purple block")[2].item() == tok.unk_id
    batch = tok.encode_batch(["put the red block", "put the blue block on the yellow pad"])
    assert batch.shape == (2, 8) and batch[0, 4:].eq(tok.pad_id).all()
    tok.save(tmp_path / "tok.json")
    back = InstructionTokenizer.load(tmp_path / "tok.json")
    assert back.vocab == tok.vocab and back.vocab_size == tok.vocab_size
    with pytest.raises(ForetellError):
        tok.encode("  ...  ")
