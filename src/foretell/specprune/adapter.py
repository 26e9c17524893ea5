"""Adapters: what the pruning engine needs to know about a VLA.

A new Llama-backbone VLA is supported by a :class:`VLAAdapter` subclass that says

* ``prepare(images, instruction_ids, proprio)``: the backbone input embeddings [1, S, H], the
  original position ids [1, S] and a :class:`~foretell.specprune.model.TokenLayout` -- where each
  camera view's patch tokens are (``layout.views``: view -> slice, patches row-major), which tokens
  are the instruction (``layout.instruction``) and which are the action slots (``layout.actions``);
* ``layers`` / ``rotary`` / ``final_norm``: the decoder layers (transformers ``LlamaDecoderLayer``
  or anything with the same ``input_layernorm`` + ``self_attn.{q,k}_proj`` + call signature), the
  rotary embedding called with the ORIGINAL position ids, and the final RMSNorm;
* ``decode_actions(action_hidden)``: the action head on the action slots' final hidden states;
* ``views`` / ``patch_size``: camera names and the pixel side of one patch (for the frame
  difference on raw images in [0, 1]);
* ``install(fn)`` / ``uninstall()``: route the model's ``predict_action`` through the engine.

The engine calls decoder layers with ``position_embeddings=(cos, sin)`` (transformers >= 4.48;
developed against 5.x). OpenVLA-OFT's own transformers fork (4.40) computes rotary embeddings
inside the attention module and is not supported as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foretell.core.errors import ForetellError
from foretell.specprune.model import TokenLayout, make_bidirectional


@dataclass
class PreparedInputs:
    """Backbone inputs of one query plus the bookkeeping the engine needs."""

    embeds: torch.Tensor  # [B, S, H]
    position_ids: torch.Tensor  # [1, S] original positions
    layout: TokenLayout
    images: dict  # view -> [B, 3, H, W] raw images in [0, 1] (frame difference)
    positions_are_indices: bool = False  # position_ids == arange(S): the engine derives them from the kept indices


class VLAAdapter:
    """Interface between the pruning engine and one VLA model (see the module docstring)."""

    views: tuple = ()
    patch_size: int = 1
    patches_per_view: int = 0
    image_size: int | None = None      # side of each square camera image (None: not checked by observe)
    action_dim: int | None = None      # numbers in one executed action (None: at least 6 are required)

    def prepare(self, images, instruction_ids, proprio) -> PreparedInputs:
        raise NotImplementedError

    @property
    def layers(self):
        raise NotImplementedError

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor):
        raise NotImplementedError

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_actions(self, action_hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def install(self, fn) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the backbone runs (its first decoder layer's weights); inputs and state follow it."""
        return next(self.layers[0].parameters()).device

    def dims(self) -> dict:
        """Widths for analytic MAC counts: hidden, q_width, kv_width, intermediate."""
        attn = self.layers[0].self_attn
        mlp = self.layers[0].mlp
        return {
            "hidden": attn.q_proj.in_features,
            "q_width": attn.q_proj.out_features,
            "kv_width": attn.k_proj.out_features,
            "intermediate": mlp.gate_proj.out_features,
        }


class OFTStyleAdapter(VLAAdapter):
    """Adapter for :class:`foretell.specprune.model.OFTStyleVLA`."""

    def __init__(self, vla):
        self.vla = vla
        cfg = vla.config
        self.views = tuple(cfg.views)
        self.patch_size = cfg.patch_size
        self.patches_per_view = cfg.patches_per_view
        self.image_size, self.action_dim = cfg.image_size, cfg.action_dim

    @property
    def device(self) -> torch.device:
        return self.vla.device

    def prepare(self, images, instruction_ids, proprio) -> PreparedInputs:
        if isinstance(images, dict):  # the frame difference reads them on the model's device too
            images = self.vla.inputs_to_device(images, None, None)[0]
        embeds = self.vla.embed_inputs(images, instruction_ids, proprio)
        pos = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)
        return PreparedInputs(embeds=embeds, position_ids=pos, layout=self.vla.layout(instruction_ids.shape[1]), images=images,
                              positions_are_indices=True)

    @property
    def layers(self):
        return self.vla.backbone.layers

    def rotary(self, hidden, position_ids):
        return self.vla.backbone.rotary_emb(hidden, position_ids=position_ids)

    def final_norm(self, hidden):
        return self.vla.backbone.norm(hidden)

    def decode_actions(self, action_hidden):
        return self.vla.action_head(action_hidden).float()

    def install(self, fn) -> None:
        if self.vla._pruning_hook is not None:
            raise ForetellError("a pruning method is already applied to this model; call .remove() on its handle first")
        self.vla._pruning_hook = fn

    def uninstall(self) -> None:
        self.vla._pruning_hook = None


class PrismaticOFTAdapter(VLAAdapter):
    """Adapter for the Prismatic / OpenVLA-OFT model class.

    Expects ``vla.vision_backbone`` (pixel_values [B, 3*num_views, H, W], views stacked on the
    channel axis as OFT does -> patch features [B, num_views*N, Dv]), ``vla.projector`` (-> hidden
    size) and ``vla.language_model`` (a transformers ``LlamaForCausalLM``), plus the separate OFT
    ``action_head`` (``predict_action(hidden)`` or callable, [B, chunk*action_dim, H] -> actions)
    and optional ``proprio_projector``. ``input_ids`` is OFT's prompt: [BOS, prompt ...,
    chunk*action_dim action placeholders, STOP]. Sequence fed to Llama (as in OFT):
    [BOS, patches, proprio?, prompt ..., zeroed action embeddings, STOP]. The language model is
    switched to bidirectional attention (OFT's parallel decoding).

    ``pixel_transform`` maps the dict of raw [0, 1] images to OFT's pixel_values (default: stack the
    views on the channel axis). ``instruction_skip`` template tokens after BOS are not used as
    attention queries (e.g. "In: What action should the robot take to").
    """

    def __init__(self, vla, action_head, *, views=("third", "wrist"), image_size: int, patch_size: int, chunk: int,
                 action_dim: int, proprio_projector=None, pixel_transform=None, instruction_skip: int = 0):
        for attr in ("vision_backbone", "projector", "language_model"):
            if not hasattr(vla, attr):
                raise ForetellError(f"model has no attribute {attr!r}; the Prismatic/OpenVLA-OFT adapter needs vision_backbone, projector and language_model")
        self.vla, self.action_head, self.proprio_projector = vla, action_head, proprio_projector
        self.views = tuple(views)
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.patches_per_view = (self.image_size // self.patch_size) ** 2
        self.chunk, self.action_dim = int(chunk), int(action_dim)
        self.pixel_transform = pixel_transform
        self.instruction_skip = int(instruction_skip)
        self.llama = vla.language_model.model
        make_bidirectional(self.llama)
        self._saved = None

    def _pixels(self, images) -> torch.Tensor:
        missing = [v for v in self.views if v not in images]
        if missing:
            raise ForetellError(f"missing camera view(s) {missing}; the model needs views {list(self.views)}")
        for v in self.views:
            im = images[v]
            if im.dim() != 4 or im.shape[1] != 3 or im.shape[-1] != self.image_size or im.shape[-2] != self.image_size:
                raise ForetellError(f"image for view {v!r} has shape {tuple(im.shape)}; expected [B, 3, {self.image_size}, {self.image_size}]")
        if self.pixel_transform is not None:
            return self.pixel_transform(images)
        pixels = torch.cat([images[v] for v in self.views], dim=1)
        weight = next(self.vla.vision_backbone.parameters(), None)
        return pixels.to(weight.dtype) if weight is not None and pixels.is_floating_point() else pixels

    def prepare(self, images, instruction_ids, proprio) -> PreparedInputs:
        n_act = self.chunk * self.action_dim
        if instruction_ids.dim() != 2 or instruction_ids.shape[1] < n_act + 3:
            raise ForetellError(f"input_ids must be [B, L] with BOS, prompt, {n_act} action placeholders and STOP")
        dev = self.device  # inputs follow the model, as transformers models do
        if isinstance(images, dict):
            images = {v: im.to(dev) if torch.is_tensor(im) else im for v, im in images.items()}
        instruction_ids = instruction_ids.to(dev)
        proprio = proprio.to(dev) if torch.is_tensor(proprio) else proprio
        patches = self.vla.projector(self.vla.vision_backbone(self._pixels(images)))
        n_vis = self.patches_per_view * len(self.views)
        if patches.shape[1] != n_vis:
            raise ForetellError(f"vision backbone returned {patches.shape[1]} patch tokens; expected {n_vis} ({len(self.views)} views x {self.patches_per_view})")
        tok = self.vla.language_model.get_input_embeddings()(instruction_ids)
        act = slice(instruction_ids.shape[1] - n_act - 1, instruction_ids.shape[1] - 1)
        tok = tok.clone()
        tok[:, act] = 0.0  # OFT zeroes the action placeholder embeddings
        parts = [tok[:, :1], patches]
        if self.proprio_projector is not None:
            parts.append(self.proprio_projector(proprio.to(patches.dtype)).unsqueeze(1))
        parts.append(tok[:, 1:])
        embeds = torch.cat(parts, dim=1)
        pos0 = 1 + n_vis + (1 if self.proprio_projector is not None else 0)
        views = {v: slice(1 + i * self.patches_per_view, 1 + (i + 1) * self.patches_per_view) for i, v in enumerate(self.views)}
        n_prompt = instruction_ids.shape[1] - 1 - n_act - 1
        instr = slice(pos0 + min(self.instruction_skip, max(n_prompt - 1, 0)), pos0 + n_prompt)
        actions = slice(pos0 + n_prompt, pos0 + n_prompt + n_act)
        layout = TokenLayout(views=views, proprio=slice(pos0 - 1, pos0) if self.proprio_projector is not None else slice(pos0, pos0),
                             instruction=instr, actions=actions, length=embeds.shape[1])
        pos = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)
        return PreparedInputs(embeds=embeds, position_ids=pos, layout=layout, images=images, positions_are_indices=True)

    @property
    def layers(self):
        return self.llama.layers

    def rotary(self, hidden, position_ids):
        return self.llama.rotary_emb(hidden, position_ids=position_ids)

    def final_norm(self, hidden):
        return self.llama.norm(hidden)

    def decode_actions(self, action_hidden):
        head = self.action_head
        out = head.predict_action(action_hidden) if hasattr(head, "predict_action") else head(action_hidden)
        return out.reshape(action_hidden.shape[0], self.chunk, self.action_dim).float()

    def reference_actions(self, images, instruction_ids, proprio) -> torch.Tensor:
        """Unpruned actions through the language model's own ``LlamaModel.forward`` (bidirectional)."""
        with torch.no_grad():
            prep = self.prepare(images, instruction_ids, proprio)
            hidden = self.llama(inputs_embeds=prep.embeds, position_ids=prep.position_ids).last_hidden_state
            return self.decode_actions(hidden[:, prep.layout.actions])

    def install(self, fn) -> None:
        if "predict_action" in vars(self.vla):
            raise ForetellError("a pruning method is already applied to this model; call .remove() on its handle first")
        self.vla.predict_action = fn  # instance attribute shadows OFT's own predict_action while applied

    def uninstall(self) -> None:
        vars(self.vla).pop("predict_action", None)
