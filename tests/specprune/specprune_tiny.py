"""Tiny models and inputs shared by the specprune engine/model tests (fast on a CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foretell.specprune.model import OFTStyleVLA, VLAConfig
from foretell.specprune.tokenizer import InstructionTokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and a shared CPU punishes oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WORDS = ["put the red green blue yellow block on pad"]


def tiny_config(**changes) -> VLAConfig:
    base = dict(image_size=32, patch_size=8, views=("third", "wrist"), hidden_size=64, num_layers=5, num_heads=4,
                num_kv_heads=2, intermediate_size=128, vocab_size=InstructionTokenizer(WORDS).vocab_size, proprio_dim=8,
                action_dim=7, chunk=2, vision_dim=32, action_head_hidden=64)
    base.update(changes)
    return VLAConfig(**base)


def tiny_vla(seed: int = 0, **changes) -> OFTStyleVLA:
    torch.manual_seed(seed)
    return OFTStyleVLA(tiny_config(**changes)).eval()


def tiny_inputs(seed: int = 0, batch: int = 1, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    images = {v: torch.rand(batch, 3, size, size, generator=g) for v in ("third", "wrist")}
    ids = InstructionTokenizer(WORDS).encode_batch(["put the red block on the green pad"] * batch)
    proprio = torch.randn(batch, 8, generator=g)
    return images, ids, proprio


class Embedded:
    """The tiny model's backbone input for ``tiny_inputs()``: embeddings, layout, positions and RoPE."""

    def __init__(self, vla: OFTStyleVLA):
        images, ids, proprio = tiny_inputs()
        self.vla = vla
        self.emb = vla.embed_inputs(images, ids, proprio)
        self.lay = vla.layout(ids.shape[1])
        self.pos = torch.arange(self.lay.length).unsqueeze(0)
        self.cos, self.sin = vla.backbone.rotary_emb(self.emb, self.pos)
        self.instruction_rows = torch.arange(self.lay.instruction.start, self.lay.instruction.stop)

    def state(self):
        """A fresh, unpruned TokenState of every token."""
        from foretell.specprune.engine import TokenState, token_kinds

        return TokenState(hidden=self.emb, position_ids=self.pos, cos=self.cos, sin=self.sin,
                          origin=torch.arange(self.lay.length), layout=self.lay, kinds=token_kinds(self.lay))

    def eager_attention(self, layer) -> torch.Tensor:
        """The layer's own attention weights (eager implementation), [batch, heads, tokens, tokens]."""
        config = self.vla.backbone.config
        before = config._attn_implementation
        config._attn_implementation = "eager"
        try:
            _, weights = layer.self_attn(hidden_states=layer.input_layernorm(self.emb),
                                         position_embeddings=(self.cos, self.sin), attention_mask=None)
        finally:
            config._attn_implementation = before
        return weights


def moved(images: dict, view: str = "third", patch: tuple = (0, 0), patch_size: int = 8, seed: int = 1) -> dict:
    """A copy of ``images`` with one patch of one view replaced by fresh noise."""
    out = {k: v.clone() for k, v in images.items()}
    r, c = patch
    g = torch.Generator().manual_seed(seed)
    out[view][:, :, r * patch_size:(r + 1) * patch_size, c * patch_size:(c + 1) * patch_size] = torch.rand(
        out[view].shape[0], 3, patch_size, patch_size, generator=g)
    return out


class TinyVisionBackbone(nn.Module):
    """Prismatic-style vision backbone: views stacked on channels -> patch features of all views."""

    def __init__(self, views: int, patch: int, dim: int):
        super().__init__()
        self.views = views
        self.patchify = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, pixel_values):
        feats = [self.patchify(x).flatten(2).transpose(1, 2) for x in pixel_values.chunk(self.views, dim=1)]
        return torch.cat(feats, dim=1)


class TinyL1Head(nn.Module):
    """OFT L1RegressionActionHead-like: MLP over each chunk step's action_dim slot states."""

    def __init__(self, hidden: int, chunk: int, action_dim: int):
        super().__init__()
        self.chunk, self.action_dim = chunk, action_dim
        self.mlp = nn.Sequential(nn.Linear(hidden * action_dim, 32), nn.GELU(), nn.Linear(32, action_dim))

    def predict_action(self, hidden):
        return self.mlp(hidden.reshape(hidden.shape[0], self.chunk, -1))


class TinyPrismatic(nn.Module):
    """Random-init model with the Prismatic/OpenVLA-OFT attribute structure."""

    def __init__(self, hidden: int = 64, layers: int = 4, vocab: int = 40):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.vision_backbone = TinyVisionBackbone(2, 8, 24)
        self.projector = nn.Sequential(nn.Linear(24, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        lc = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
        lc._attn_implementation = "sdpa"
        self.language_model = LlamaForCausalLM(lc)

    def predict_action(self, *args, **kwargs):  # stands for OFT's own method; shadowed while a handle is applied
        return "original"
