"""A small OpenVLA-OFT-style Vision-Language-Action model on a transformers Llama backbone.

Structure (as in OpenVLA-OFT, scaled down so it trains on a CPU):
per-view patch encoder (shared conv patchify + patch-position and view embeddings) -> projector MLP
-> ``LlamaModel`` run with **bidirectional** attention (parallel decoding of all action slots in one
pass) -> L1-regression MLP action head over the action slots' final hidden states.

Backbone token layout (batch-first, one row per token)::

    [BOS, view0 patches, view1 patches, ..., proprio, instruction words..., action slots, STOP]

Action slots are ``chunk * action_dim`` tokens whose input embedding is zero plus a learned slot
embedding (OFT feeds zero embeddings there). Position ids are ``0..S-1``.

Non-causal Llama: ``LlamaModel.forward`` builds a causal mask unless ``config.is_causal`` is False
(transformers 5), and the SDPA path additionally falls back to ``module.is_causal`` when no mask is
given. We set both to False and run the decoder layers ourselves with ``attention_mask=None``
(:meth:`OFTStyleVLA.run_backbone`), so every layer uses SDPA with ``is_causal=False``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass, field

import torch
from torch import nn

from foretell.core.errors import ForetellError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class VLAConfig:
    """Sizes of the OFT-style VLA. ``vocab_size`` comes from the instruction tokenizer."""

    image_size: int = 96
    patch_size: int = 8
    views: tuple = ("third", "wrist")
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 768
    vocab_size: int = 64
    proprio_dim: int = 8
    action_dim: int = 7
    chunk: int = 8
    vision_dim: int = 128
    action_head_hidden: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_positions: int = 2048
    stem: str = "patch"          # "patch": one conv of kernel = stride = patch_size; "conv": see ConvStem
    film: bool = False           # OFT+-style FiLM: the instruction modulates the vision features (LanguageFiLM)
    coord_embed: bool = False    # add a learned linear embedding of each patch's (x, y) centre to its visual token
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.views = tuple(self.views)
        if self.image_size % self.patch_size:
            raise ForetellError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}; pick sizes that divide")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ForetellError(f"views={self.views!r} must be a non-empty tuple of distinct names, e.g. ('third', 'wrist')")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ForetellError("hidden_size must be divisible by num_heads and num_heads by num_kv_heads")
        if self.stem not in ("patch", "conv"):
            raise ForetellError(f"stem={self.stem!r} is not supported; accepted: patch, conv")
        if self.film and self.stem != "conv":
            raise ForetellError("film=True needs stem='conv' (FiLM modulates the conv stem's stages)")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ForetellError(f"stem='conv' needs a power-of-two patch_size >= 2, got {self.patch_size}")

    @property
    def patches_per_view(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_action_tokens(self) -> int:
        return self.chunk * self.action_dim


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in the backbone sequence (original, unpruned indices)."""

    views: dict  # view name -> slice of that view's patch tokens
    proprio: slice
    instruction: slice
    actions: slice
    length: int

    @property
    def visual_indices(self) -> torch.Tensor:
        """All visual token indices, view after view."""
        return torch.cat([torch.arange(s.start, s.stop) for s in self.views.values()])


def token_layout(cfg: VLAConfig, instruction_len: int) -> TokenLayout:
    """The :class:`TokenLayout` of ``cfg`` for an instruction of ``instruction_len`` tokens."""
    n = cfg.patches_per_view
    views, pos = {}, 1
    for name in cfg.views:
        views[name] = slice(pos, pos + n)
        pos += n
    proprio = slice(pos, pos + 1)
    instruction = slice(pos + 1, pos + 1 + instruction_len)
    actions = slice(instruction.stop, instruction.stop + cfg.num_action_tokens)
    return TokenLayout(views=views, proprio=proprio, instruction=instruction, actions=actions, length=actions.stop + 1)


def _grid_sincos(grid: int, dim: int) -> torch.Tensor:
    """2-D sine/cosine position table [grid*grid, dim] (row-major; half the channels per axis), the
    initial value of the learned patch positions with the conv stem, so patch coordinates are
    linearly readable by attention from the first step."""
    quarter = dim // 4
    freqs = 1.0 / (16.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    pos = torch.arange(grid, dtype=torch.float32) / grid * torch.pi
    ang = pos[:, None] * freqs[None] * 2                          # [grid, quarter]
    axis = torch.cat([ang.sin(), ang.cos()], dim=1)               # [grid, 2*quarter]
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    table = torch.cat([axis[rows.flatten()], axis[cols.flatten()]], dim=1)
    return nn.functional.pad(table, (0, dim - table.shape[1]))


class ConvStem(nn.Module):
    """Small conv stem: pixel-coordinate channels, then log2(patch_size) 3x3 stride-2 convolutions.

    Produces the same grid of one token per ``patch_size`` x ``patch_size`` patch as the plain
    patchify, but every token sees its neighbours (overlapping receptive fields) and knows where it
    is in the image, which a from-scratch policy needs to localise small objects quickly.
    """

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        stages = cfg.patch_size.bit_length() - 1
        widths = [5] + [min(cfg.vision_dim, 32 * 2 ** i) for i in range(stages - 1)] + [cfg.vision_dim]
        layers: list[nn.Module] = []
        for i in range(stages):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1))
            if i < stages - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        c = torch.linspace(-1.0, 1.0, cfg.image_size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(c, c, indexing="ij")).unsqueeze(0), persistent=False)

    @property
    def hidden_widths(self) -> list:
        """Channels after each GELU (the places FiLM modulates)."""
        return [m.out_channels for m in self.net if isinstance(m, nn.Conv2d)][:-1]

    def forward(self, x: torch.Tensor, film: list | None = None) -> torch.Tensor:
        x = torch.cat([x, self.coords.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        stage = 0
        for m in self.net:
            x = m(x)
            if isinstance(m, nn.GELU) and film is not None:
                gamma, beta = film[stage]
                x = x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
                stage += 1
        return x


class LanguageFiLM(nn.Module):
    """OFT+-style FiLM conditioning of the vision encoder on the instruction.

    OpenVLA-OFT+ modulates its vision features with the average instruction embedding. An average
    is a bag of words ("red block ... green pad" = "green block ... red pad"), so the pooled vector
    here is the masked mean of a width-2 convolution over the word embeddings (adjacent-word pairs
    such as "red block"), mapped to one per-channel scale and shift per conv stage.
    """

    def __init__(self, hidden_size: int, widths: list):
        super().__init__()
        self.pairs = nn.Conv1d(hidden_size, hidden_size, kernel_size=2)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, 2 * w) for w in widths)
        for head in self.heads:  # start as the identity modulation
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> list:
        """words [B, L, H], mask [B, L] (True = real word) -> [(gamma, beta) [B, C] per stage]."""
        pair = nn.functional.gelu(self.pairs(words.transpose(1, 2))).transpose(1, 2)  # [B, L-1, H]
        m = (mask[:, 1:] & mask[:, :-1]).to(pair.dtype).unsqueeze(-1)
        pooled = (pair * m).sum(1) / m.sum(1).clamp_min(1.0)
        return [tuple(head(pooled).chunk(2, dim=-1)) for head in self.heads]


class PatchEncoder(nn.Module):
    """Shared patch encoder for every camera view, plus learned patch-position and view embeddings."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        if cfg.stem == "conv":
            self.patchify = ConvStem(cfg)
        else:
            self.patchify = nn.Conv2d(3, cfg.vision_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        init = _grid_sincos(cfg.image_size // cfg.patch_size, cfg.vision_dim) if cfg.stem == "conv" else \
            torch.randn(cfg.patches_per_view, cfg.vision_dim) * 0.02
        self.patch_pos = nn.Parameter(init)
        self.view_embed = nn.Parameter(torch.randn(len(cfg.views), cfg.vision_dim) * 0.02)
        self.norm = nn.LayerNorm(cfg.vision_dim)

    def forward(self, image: torch.Tensor, view_index: int, film: list | None = None) -> torch.Tensor:
        x = (image - 0.5) * 4.0
        x = self.patchify(x, film) if film is not None else self.patchify(x)  # [B, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        return self.norm(x + self.patch_pos + self.view_embed[view_index])


class L1ActionHead(nn.Module):
    """OFT's L1-regression head: an MLP over each chunk step's ``action_dim`` slot states."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.action_dim * cfg.hidden_size
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, cfg.action_head_hidden),
            nn.GELU(),
            nn.Linear(cfg.action_head_hidden, cfg.action_head_hidden),
            nn.GELU(),
            nn.Linear(cfg.action_head_hidden, cfg.action_dim),
        )

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        """[B, chunk*action_dim, H] -> [B, chunk, action_dim]."""
        b = action_hidden.shape[0]
        return self.mlp(action_hidden.reshape(b, self.cfg.chunk, -1))


def _llama_config(cfg: VLAConfig):
    from transformers import LlamaConfig

    lc = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
    )
    lc._attn_implementation = "sdpa"
    lc.is_causal = False
    return lc


def make_bidirectional(llama_model) -> None:
    """Turn every attention module of a transformers Llama model non-causal (parallel decoding)."""
    llama_model.config.is_causal = False
    for layer in llama_model.layers:
        layer.self_attn.is_causal = False


class OFTStyleVLA(nn.Module):
    """Small OpenVLA-OFT-style policy: images + instruction + proprio -> a chunk of actions."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        from transformers.models.llama import LlamaModel

        self.config = cfg
        self.vision = PatchEncoder(cfg)
        self.projector = nn.Sequential(nn.Linear(cfg.vision_dim, cfg.hidden_size), nn.GELU(), nn.Linear(cfg.hidden_size, cfg.hidden_size))
        self.proprio_proj = nn.Linear(cfg.proprio_dim, cfg.hidden_size)
        self.bos = nn.Parameter(torch.randn(cfg.hidden_size) * 0.02)
        self.stop = nn.Parameter(torch.randn(cfg.hidden_size) * 0.02)
        self.action_slots = nn.Parameter(torch.randn(cfg.num_action_tokens, cfg.hidden_size) * 0.02)
        self.backbone = LlamaModel(_llama_config(cfg))
        make_bidirectional(self.backbone)
        self.action_head = L1ActionHead(cfg)
        self.film = LanguageFiLM(cfg.hidden_size, self.vision.patchify.hidden_widths) if cfg.film else None
        if cfg.coord_embed:  # one linear map per view: token += W_view @ (x, y) of the patch centre, in [-1, 1]
            grid = cfg.image_size // cfg.patch_size
            c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
            yy, xx = torch.meshgrid(c, c, indexing="ij")
            self.register_buffer("patch_xy", torch.stack([xx.flatten(), yy.flatten()], dim=1), persistent=False)
            self.coord_proj = nn.ModuleList(nn.Linear(2, cfg.hidden_size, bias=False) for _ in cfg.views)
        else:
            self.coord_proj = None
        self._pruning_hook = None  # set by foretell.specprune.apply(); see predict_action

    # ----------------------------------------------------------------- inputs
    def check_inputs(self, images, instruction_ids, proprio) -> int:
        """Validate shapes; return the batch size. Raises ForetellError with one line on bad input."""
        cfg = self.config
        if not isinstance(images, dict):
            raise ForetellError(f"images must be a dict view -> tensor[B,3,H,W] with views {list(cfg.views)}")
        missing = [v for v in cfg.views if v not in images]
        if missing:
            raise ForetellError(f"missing camera view(s) {missing}; the model needs views {list(cfg.views)}")
        extra = [v for v in images if v not in cfg.views]
        if extra:
            raise ForetellError(f"unknown camera view(s) {extra}; the model accepts views {list(cfg.views)}")
        batch = None
        for v in cfg.views:
            im = images[v]
            if not torch.is_tensor(im) or im.dim() != 4 or im.shape[1] != 3 or im.shape[2] != cfg.image_size or im.shape[3] != cfg.image_size:
                shape = tuple(im.shape) if torch.is_tensor(im) else type(im).__name__
                raise ForetellError(f"image for view {v!r} has shape {shape}; expected [B, 3, {cfg.image_size}, {cfg.image_size}] with values in [0, 1]")
            if not im.is_floating_point():
                raise ForetellError(f"image for view {v!r} is {str(im.dtype).replace('torch.', '')}; expected floats in "
                                    f"[0, 1] (e.g. uint8 pixels: image.float() / 255)")
            # values only where reading them is free: a check on the GPU would add a host sync per query
            if im.device.type == "cpu" and im.numel() and not _in_unit_range(im):
                raise ForetellError(f"image for view {v!r} has values outside [0, 1] (or NaN); expected floats in [0, 1] "
                                    f"(e.g. 0-255 pixels: image / 255)")
            if batch is not None and im.shape[0] != batch:
                raise ForetellError("all camera views must have the same batch size")
            batch = im.shape[0]
        if not torch.is_tensor(instruction_ids) or instruction_ids.dim() != 2 or instruction_ids.shape[0] != batch or instruction_ids.shape[1] < 1:
            raise ForetellError(f"instruction_ids must be a LongTensor [B={batch}, L>=1] from InstructionTokenizer")
        if instruction_ids.dtype != torch.long:
            raise ForetellError("instruction_ids must have dtype torch.long")
        if bool(((instruction_ids >= cfg.vocab_size) | (instruction_ids < 0)).any()):
            raise ForetellError(f"instruction id out of range [0, {cfg.vocab_size}); use the tokenizer the model was trained with")
        if not torch.is_tensor(proprio) or tuple(proprio.shape) != (batch, cfg.proprio_dim):
            shape = tuple(proprio.shape) if torch.is_tensor(proprio) else type(proprio).__name__
            raise ForetellError(f"proprio has shape {shape}; expected [{batch}, {cfg.proprio_dim}]")
        if proprio.device.type == "cpu" and not bool(torch.isfinite(proprio).all()):
            raise ForetellError("proprio holds NaN or inf; expected the robot's finite proprioceptive state")
        return batch

    def layout(self, instruction_len: int) -> TokenLayout:
        """Token layout for an instruction of ``instruction_len`` ids."""
        return token_layout(self.config, instruction_len)

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return self.bos.device

    def inputs_to_device(self, images, instruction_ids, proprio) -> tuple:
        """The inputs on the model's device (no copy for those already there), as transformers
        models move ``input_ids`` and pixel values to their own device."""
        dev = self.bos.device
        if isinstance(images, dict):
            images = {v: im.to(dev) if torch.is_tensor(im) else im for v, im in images.items()}
        if torch.is_tensor(instruction_ids):
            instruction_ids = instruction_ids.to(dev)
        if torch.is_tensor(proprio):
            proprio = proprio.to(dev)
        return images, instruction_ids, proprio

    def embed_inputs(self, images, instruction_ids, proprio) -> torch.Tensor:
        """Backbone input embeddings [B, S, H] in the documented layout (inputs on any device)."""
        b = self.check_inputs(images, instruction_ids, proprio)
        images, instruction_ids, proprio = self.inputs_to_device(images, instruction_ids, proprio)
        dtype = self.bos.dtype
        words = self.backbone.embed_tokens(instruction_ids)
        film = self.film(words, instruction_ids != 0) if self.film is not None else None  # id 0 = <pad>
        parts = [self.bos.expand(b, 1, -1)]
        for i, v in enumerate(self.config.views):
            tokens = self.projector(self.vision(images[v].to(dtype), i, film))
            if self.coord_proj is not None:
                tokens = tokens + self.coord_proj[i](self.patch_xy.to(dtype))
            parts.append(tokens)
        parts.append(self.proprio_proj(proprio.to(dtype)).unsqueeze(1))
        parts.append(words)
        parts.append(self.action_slots.expand(b, -1, -1))  # zero embedding + learned slot embedding
        parts.append(self.stop.expand(b, 1, -1))
        return torch.cat(parts, dim=1)

    # --------------------------------------------------------------- backbone
    def run_backbone(self, embeds: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bidirectional pass through the Llama decoder layers + final norm -> [B, S, H]."""
        if position_ids is None:
            position_ids = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)
        rope = self.backbone.rotary_emb(embeds, position_ids=position_ids)
        h = embeds
        for layer in self.backbone.layers:
            h = layer(h, attention_mask=None, position_ids=position_ids, position_embeddings=rope)
        return self.backbone.norm(h)

    def forward(self, images, instruction_ids, proprio) -> torch.Tensor:
        """Differentiable action prediction [B, chunk, action_dim] (used for training)."""
        embeds = self.embed_inputs(images, instruction_ids, proprio)
        hidden = self.run_backbone(embeds)
        lay = self.layout(instruction_ids.shape[1])
        return self.action_head(hidden[:, lay.actions])

    def loss(self, images, instruction_ids, proprio, target_actions) -> torch.Tensor:
        """Mean L1 error over the action chunk (OFT's training objective)."""
        pred = self.forward(images, instruction_ids, proprio)
        want = (pred.shape[0], self.config.chunk, self.config.action_dim)
        if tuple(target_actions.shape) != want:
            raise ForetellError(f"target_actions has shape {tuple(target_actions.shape)}; expected {list(want)}")
        return (pred - target_actions.to(pred.device, pred.dtype)).abs().mean()

    def predict_action(self, images, instruction_ids, proprio) -> torch.Tensor:
        """Inference: one bidirectional pass -> actions [B, chunk, action_dim] (float).

        Runs under ``torch.inference_mode``; the returned tensor is a normal one. While a pruning
        handle is applied (``foretell.specprune.apply``), the handle runs the pass and prunes tokens
        inside the backbone.
        """
        if self._pruning_hook is not None:
            return self._pruning_hook(images, instruction_ids, proprio)
        with torch.inference_mode():
            actions = self.forward(images, instruction_ids, proprio).float()
        return actions.clone()

    # -------------------------------------------------------------- save/load
    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        from safetensors.torch import save_file

        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.asdict(self.config)
        cfg["views"] = list(cfg["views"])
        (d / CONFIG_NAME).write_text(json.dumps(cfg, indent=1))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory) -> "OFTStyleVLA":
        """Load a model written by :meth:`save_pretrained` (eval mode)."""
        from foretell.core.weights import load_model_folder

        d = pathlib.Path(directory)

        def build(raw: dict) -> "OFTStyleVLA":
            known = {f.name for f in dataclasses.fields(VLAConfig)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise ForetellError(f"{d / CONFIG_NAME} has unknown keys {unknown}; accepted keys: {sorted(known)}")
            return cls(VLAConfig(**raw))

        return load_model_folder(d, build, written_by="OFTStyleVLA.save_pretrained (scripts/specprune/train_bc.py)",
                                 config_name=CONFIG_NAME, weights_name=WEIGHTS_NAME)


def _in_unit_range(im: torch.Tensor) -> bool:
    """Every value of ``im`` in [0, 1] (False for NaN or inf), in one pass over the tensor."""
    low, high = torch.aminmax(im)
    return 0.0 <= float(low) and float(high) <= 1.0
