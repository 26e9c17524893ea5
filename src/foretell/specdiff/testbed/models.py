"""Small class-conditional SD3-class and FLUX-class diffusion transformers for the digits testbed.

Both models are the real diffusers classes (``SD3Transformer2DModel``, ``FluxTransformer2DModel``);
a tiny :class:`ClassConditioner` turns a digit label (10 = "null", for classifier-free guidance) into
text-like ``encoder_hidden_states`` and ``pooled_projections``. :class:`DigitsDiT` bundles the two and
hides the layout differences (SD3 patchifies itself; FLUX takes 2x2-packed tokens plus position ids).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from foretell.core.errors import ForetellError

NULL_CLASS = 10
MODEL_KINDS = ("sd3", "flux")


@dataclass
class DigitsModelConfig:
    """Architecture of a digits testbed model (saved as ``config.json`` beside the weights)."""

    kind: str = "sd3"
    image_size: int = 32
    channels: int = 1
    patch_size: int = 2
    heads: int = 4
    head_dim: int = 32
    layers: int = 4              # SD3: joint blocks; FLUX: double-stream blocks
    single_layers: int = 0       # FLUX only: single-stream blocks
    cond_tokens: int = 4
    cond_dim: int = 64
    pooled_dim: int = 64
    qk_norm: str | None = "rms_norm"   # SD3 only (SD3.5-style); FLUX always uses RMS qk-norm
    scheduler_shift: float = 1.0

    def __post_init__(self) -> None:
        import math

        if self.kind not in MODEL_KINDS:
            raise ForetellError(f"unknown model kind {self.kind!r}; accepted: {', '.join(MODEL_KINDS)}")
        minimum = {"image_size": 1, "channels": 1, "patch_size": 1, "heads": 1, "head_dim": 2, "layers": 1,
                   "single_layers": 0, "cond_tokens": 1, "cond_dim": 1, "pooled_dim": 1}
        for name, low in minimum.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ForetellError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.image_size % self.patch_size:
            raise ForetellError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.head_dim % 2:
            raise ForetellError(f"head_dim must be even (rotary embeddings rotate pairs), got {self.head_dim}")
        qk_norms = ("rms_norm", "layer_norm", "fp32_layer_norm", "layer_norm_across_heads", "rms_norm_across_heads", "l2")
        if self.qk_norm is not None and self.qk_norm not in qk_norms:       # diffusers' Attention accepts these
            raise ForetellError(f"unknown qk_norm {self.qk_norm!r}; accepted: {', '.join(qk_norms)} or None")
        if not isinstance(self.scheduler_shift, (int, float)) or not math.isfinite(self.scheduler_shift) \
                or self.scheduler_shift <= 0:
            raise ForetellError(f"scheduler_shift must be a finite number > 0, got {self.scheduler_shift!r}")

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def sd3_digits_config(**overrides) -> DigitsModelConfig:
    """Default SD3-class digits model: 4 joint blocks, width 128, 256 image tokens."""
    base = dict(kind="sd3", layers=4)
    base.update(overrides)
    return DigitsModelConfig(**base)


def flux_digits_config(**overrides) -> DigitsModelConfig:
    """Default FLUX-class digits model: 1 double-stream + 3 single-stream blocks, width 128, 256 image tokens."""
    base = dict(kind="flux", layers=1, single_layers=3, qk_norm=None)
    base.update(overrides)
    return DigitsModelConfig(**base)


class ClassConditioner(nn.Module):
    """Learned embedding table: label (0..9, 10 = null) -> text-like tokens and a pooled vector."""

    def __init__(self, tokens: int, dim: int, pooled_dim: int, num_rows: int = NULL_CLASS + 1):
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.token_table = nn.Embedding(num_rows, tokens * dim)
        self.pooled_table = nn.Embedding(num_rows, pooled_dim)
        nn.init.normal_(self.token_table.weight, std=0.5)
        nn.init.normal_(self.pooled_table.weight, std=0.5)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.token_table(labels).view(labels.shape[0], self.tokens, self.dim)
        return tokens, self.pooled_table(labels)


def build_transformer(cfg: DigitsModelConfig) -> nn.Module:
    """The diffusers transformer for ``cfg`` (random weights)."""
    if cfg.kind == "sd3":
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel(
            sample_size=cfg.image_size, patch_size=cfg.patch_size, in_channels=cfg.channels,
            out_channels=cfg.channels, num_layers=cfg.layers, attention_head_dim=cfg.head_dim,
            num_attention_heads=cfg.heads, joint_attention_dim=cfg.cond_dim,
            caption_projection_dim=cfg.width, pooled_projection_dim=cfg.pooled_dim,
            pos_embed_max_size=cfg.image_size // cfg.patch_size, qk_norm=cfg.qk_norm)
    from diffusers import FluxTransformer2DModel

    packed = cfg.channels * cfg.patch_size ** 2
    rope = _rope_axes(cfg.head_dim)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=packed, out_channels=packed, num_layers=cfg.layers,
        num_single_layers=cfg.single_layers, attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads, joint_attention_dim=cfg.cond_dim,
        pooled_projection_dim=cfg.pooled_dim, guidance_embeds=False, axes_dims_rope=rope)


def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    # FLUX splits each head's rotary dims over (text index, row, column); all three must be even.
    rest = head_dim // 4 // 2 * 2
    side = (head_dim - rest) // 2 // 2 * 2
    return (head_dim - 2 * side, side, side)


class DigitsDiT(nn.Module):
    """A diffusers transformer plus its class conditioner, called with images in NCHW layout.

    ``forward(x, sigma, labels)`` returns the rectified-flow velocity for images ``x`` at noise level
    ``sigma`` in [0, 1] (``x = (1 - sigma) x0 + sigma noise``, ``v = noise - x0``).
    """

    def __init__(self, cfg: DigitsModelConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = build_transformer(cfg)
        self.conditioner = ClassConditioner(cfg.cond_tokens, cfg.cond_dim, cfg.pooled_dim)
        self._ids: dict[str, torch.Tensor] = {}

    def model_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The ``timestep`` argument the transformer expects for noise level ``sigma`` (as pipelines pass it)."""
        return sigma * 1000.0 if self.cfg.kind == "sd3" else sigma

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype).expand(x.shape[0]) if sigma.dim() <= 1 else sigma
        cond, pooled = self.conditioner(labels)
        return self.call_transformer(x, self.model_timestep(sigma), cond, pooled)

    def call_transformer(self, x, timestep, cond, pooled) -> torch.Tensor:
        """Run the bare transformer on NCHW images with the timestep value diffusers' pipelines use."""
        if self.cfg.kind == "sd3":
            return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=cond,
                                    pooled_projections=pooled, return_dict=False)[0]
        img_ids, txt_ids = self.position_ids(x.device, x.dtype)
        out = self.transformer(hidden_states=pack(x, self.cfg.patch_size), timestep=timestep,
                               encoder_hidden_states=cond, pooled_projections=pooled,
                               img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
        return unpack(out, self.cfg.channels, self.cfg.image_size, self.cfg.patch_size)

    def position_ids(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """FLUX (img_ids, txt_ids) for the fixed image grid, as the Flux pipeline builds them."""
        key = f"{device}-{dtype}"
        if key not in self._ids:
            side = self.cfg.image_size // self.cfg.patch_size
            ids = torch.zeros(side, side, 3)
            ids[..., 1] = torch.arange(side)[:, None]
            ids[..., 2] = torch.arange(side)[None, :]
            self._ids[key] = (ids.reshape(-1, 3).to(device, dtype),
                              torch.zeros(self.cfg.cond_tokens, 3, device=device, dtype=dtype))
        return self._ids[key]

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (transformer + conditioner) into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "DigitsDiT":
        """Load a model written by :meth:`save`; ForetellError if the folder is not one."""
        from foretell.core.weights import load_model_folder

        return load_model_folder(directory, lambda raw: cls(DigitsModelConfig(**raw)),
                                 written_by="scripts/specdiff/train_digits.py (DigitsDiT.save)")


def pack(x: torch.Tensor, p: int) -> torch.Tensor:
    """NCHW -> [N, (H/p)(W/p), C p p] tokens, the Flux pipeline's ``_pack_latents`` layout."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def unpack(tokens: torch.Tensor, c: int, size: int, p: int) -> torch.Tensor:
    """Inverse of :func:`pack`."""
    n = tokens.shape[0]
    s = size // p
    x = tokens.view(n, s, s, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, size, size)
