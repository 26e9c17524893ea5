"""Model-specific pieces: token layout, the gathered forward, timestep units and MAC accounting.

SD3Transformer2DModel (SD3, SD3.5 with dual attention / qk-norm): positions are added by the patch
embedding, so the image tokens are gathered after ``pos_embed``; joint attention is [image, text].
FluxTransformer2DModel: positions are RoPE from ``img_ids``, so the packed latents and the image ids
are gathered before embedding; attention is [text, image]; single-stream blocks concatenate both.
The per-token "feature" that C2/C3 reuse is the transformer's output for that token (the velocity
patch, before unpatchifying).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from foretell.core.errors import ForetellError
from foretell.specdiff.attention import AttentionContext, FluxCachingAttnProcessor, JointCachingAttnProcessor

SUPPORTED = "SD3Transformer2DModel (SD3/SD3.5), FluxTransformer2DModel, and their pipelines"


def _float_dtype(like: torch.Tensor) -> torch.dtype:
    return like.dtype if like.is_floating_point() else torch.float32


def _linear_macs_by_group(module: nn.Module, group_of) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            g = group_of(name)
            sizes[g] = sizes.get(g, 0) + sub.in_features * sub.out_features
    return sizes


def _stream_group(name: str) -> str:
    if "norm" in name:
        return "sample"
    if "add_" in name or "context" in name:
        return "text"
    return "image"


def _joint_group(name: str) -> str:
    return "sample" if "norm" in name else "joint"


class ModelAdapter:
    """Interface every supported transformer class implements."""

    processor_cls: type = JointCachingAttnProcessor
    stock_processor_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # --- attention modules -------------------------------------------------------------------
    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every attention layer SpecDiff wraps."""
        return [
            (name, m)
            for name, m in self.model.named_modules()
            if hasattr(m, "processor") and hasattr(m, "set_processor") and name.split(".")[-1] in ("attn", "attn2")
        ]

    def check_processors(self) -> None:
        """Only the stock processors are supported (fused or IP-adapter ones are not)."""
        for name, m in self.attention_modules():
            cls = type(m.processor).__name__
            if cls not in self.stock_processor_names:
                raise ForetellError(
                    f"unsupported attention processor {cls} at {name}; SpecDiff supports the stock "
                    f"{' / '.join(self.stock_processor_names)} (unfuse projections, remove IP-adapters)"
                )

    # --- per-call facts ----------------------------------------------------------------------
    def unsupported_call(self, call: dict[str, Any]) -> str | None:
        """Why this call must run the stock forward (controlnet, LoRA scale, ...), or None."""
        raise NotImplementedError

    def timestep_to_sigma(self, value: float, num_train_timesteps: int) -> float:
        raise NotImplementedError

    def sigma_to_timestep(self, sigma: float, like: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        raise NotImplementedError

    def num_image_tokens(self, call: dict[str, Any]) -> int:
        raise NotImplementedError

    def num_text_tokens(self, call: dict[str, Any]) -> int:
        return int(call["encoder_hidden_states"].shape[1])

    def run(self, call: dict[str, Any], idx: torch.Tensor | None, ctx: AttentionContext) -> torch.Tensor:
        """Forward with only the image tokens ``idx`` (all if None); per-token outputs (B, n, F)."""
        raise NotImplementedError

    def to_output(self, tokens: torch.Tensor, call: dict[str, Any]) -> torch.Tensor:
        """Per-token outputs (B, N, F) -> the model's output tensor."""
        raise NotImplementedError

    def macs(self, batch: int, n_query: int, n_image: int, n_text: int) -> int:
        """MACs of one call where ``n_query`` of ``n_image`` image tokens are computed."""
        raise NotImplementedError


class SD3Adapter(ModelAdapter):
    """SD3Transformer2DModel: [image, text] joint attention, patch embedding with positions."""

    processor_cls = JointCachingAttnProcessor
    stock_processor_names = ("JointAttnProcessor2_0",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        m = model
        self._blocks = []
        for block in m.transformer_blocks:
            sizes = _linear_macs_by_group(block, _stream_group)
            self._blocks.append((sizes, block.attn.inner_dim, block.attn2 is not None))
        p = m.config.patch_size
        self._patch_macs = m.config.in_channels * p * p * m.inner_dim
        self._sample = sum(_linear_macs_by_group(m.time_text_embed, lambda n: "s").values())
        self._sample += m.norm_out.linear.in_features * m.norm_out.linear.out_features
        self._context = m.context_embedder.in_features * m.context_embedder.out_features
        self._proj_out = m.proj_out.in_features * m.proj_out.out_features

    def unsupported_call(self, call):
        if call.get("block_controlnet_hidden_states") is not None:
            return "controlnet residuals"
        if call.get("skip_layers"):
            return "skip_layers"
        if call.get("joint_attention_kwargs"):
            return "joint_attention_kwargs"
        if torch.is_grad_enabled() and self.model.gradient_checkpointing:
            return "gradient checkpointing"
        return None

    def timestep_to_sigma(self, value, num_train_timesteps):
        return float(value) / num_train_timesteps

    def sigma_to_timestep(self, sigma, like, num_train_timesteps):
        return torch.full_like(like, sigma * num_train_timesteps, dtype=_float_dtype(like))

    def num_image_tokens(self, call):
        h, w = call["hidden_states"].shape[-2:]
        p = self.model.config.patch_size
        return (h // p) * (w // p)

    def run(self, call, idx, ctx):
        m = self.model
        hidden = m.pos_embed(call["hidden_states"]).contiguous()
        temb = m.time_text_embed(call["timestep"], call["pooled_projections"])
        context = m.context_embedder(call["encoder_hidden_states"])
        if idx is not None:
            hidden = hidden.index_select(1, idx)
        ctx.text_len = context.shape[1]
        for block in m.transformer_blocks:
            context, hidden = block(hidden_states=hidden, encoder_hidden_states=context, temb=temb)
        hidden = m.norm_out(hidden, temb)
        return m.proj_out(hidden)

    def to_output(self, tokens, call):
        height, width = call["hidden_states"].shape[-2:]
        p = self.model.config.patch_size
        c = self.model.out_channels
        h, w = height // p, width // p
        tokens = tokens.reshape(tokens.shape[0], h, w, p, p, c)
        tokens = torch.einsum("nhwpqc->nchpwq", tokens)
        return tokens.reshape(tokens.shape[0], c, h * p, w * p)

    def macs(self, batch, n_query, n_image, n_text):
        total = n_image * self._patch_macs + n_text * self._context + n_query * self._proj_out + self._sample
        for sizes, inner, has_attn2 in self._blocks:
            total += n_query * sizes.get("image", 0) + n_text * sizes.get("text", 0) + sizes.get("sample", 0)
            total += 2 * (n_query + n_text) * (n_image + n_text) * inner
            if has_attn2:
                total += 2 * n_query * n_image * inner
        return batch * total


class FluxAdapter(ModelAdapter):
    """FluxTransformer2DModel: [text, image] attention with RoPE, dual- and single-stream blocks."""

    processor_cls = FluxCachingAttnProcessor
    stock_processor_names = ("FluxAttnProcessor",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        m = model
        self._dual = [(_linear_macs_by_group(b, _stream_group), b.attn.inner_dim) for b in m.transformer_blocks]
        self._single = [(_linear_macs_by_group(b, _joint_group), b.attn.inner_dim) for b in m.single_transformer_blocks]
        self._embed = m.x_embedder.in_features * m.x_embedder.out_features
        self._sample = sum(_linear_macs_by_group(m.time_text_embed, lambda n: "s").values())
        self._sample += m.norm_out.linear.in_features * m.norm_out.linear.out_features
        self._context = m.context_embedder.in_features * m.context_embedder.out_features
        self._proj_out = m.proj_out.in_features * m.proj_out.out_features
        self._rotary_full = None  # (id tensors, their versions, (cos, sin)) of the last full call

    def unsupported_call(self, call):
        if call.get("controlnet_block_samples") is not None or call.get("controlnet_single_block_samples") is not None:
            return "controlnet residuals"
        if call.get("joint_attention_kwargs"):
            return "joint_attention_kwargs"
        if torch.is_grad_enabled() and self.model.gradient_checkpointing:
            return "gradient checkpointing"
        return None

    # FluxPipeline passes timestep / 1000 and the model multiplies by 1000 inside.
    def timestep_to_sigma(self, value, num_train_timesteps):
        return float(value) * 1000.0 / num_train_timesteps

    def sigma_to_timestep(self, sigma, like, num_train_timesteps):
        return torch.full_like(like, sigma * num_train_timesteps / 1000.0, dtype=_float_dtype(like))

    def num_image_tokens(self, call):
        return int(call["hidden_states"].shape[1])

    @staticmethod
    def _ids(ids: torch.Tensor) -> torch.Tensor:
        return ids[0] if ids.ndim == 3 else ids

    def run(self, call, idx, ctx):
        m = self.model
        x = call["hidden_states"]
        img_ids = self._ids(call["img_ids"])
        txt_ids = self._ids(call["txt_ids"])
        if idx is not None:
            x = x.index_select(1, idx)
            img_ids = img_ids.index_select(0, idx)
        hidden = m.x_embedder(x)
        timestep = call["timestep"].to(hidden.dtype) * 1000
        guidance = call.get("guidance")
        pooled = call["pooled_projections"]
        if guidance is not None:
            temb = m.time_text_embed(timestep, guidance.to(hidden.dtype) * 1000, pooled)
        else:
            temb = m.time_text_embed(timestep, pooled)
        context = m.context_embedder(call["encoder_hidden_states"])
        ctx.text_len = context.shape[1]
        rotary = self._rotary(call, txt_ids, img_ids, idx, ctx)
        for block in m.transformer_blocks:
            context, hidden = block(hidden_states=hidden, encoder_hidden_states=context, temb=temb, image_rotary_emb=rotary)
        singles = m.single_transformer_blocks
        if all(_plain_single_block(b) for b in singles):
            # one [text, image] tensor through every single-stream block, not a cat and split per block
            joint = torch.cat([context, hidden], dim=1)
            for block in singles:
                joint = _single_block(block, joint, temb, rotary)
            hidden = joint[:, context.shape[1] :]
        else:
            for block in singles:
                context, hidden = block(hidden_states=hidden, encoder_hidden_states=context, temb=temb,
                                        image_rotary_emb=rotary)
        hidden = m.norm_out(hidden, temb)
        return m.proj_out(hidden)

    def _rotary(self, call, txt_ids, img_ids, idx, ctx):
        """RoPE (cos, sin) of [text, image] tokens. A full step computes it for every token and keeps it;
        a cached step with the same id tensors gathers the kept tokens' rows from it (2 operators
        instead of the ~40 of ``pos_embed``; each row depends on its token's ids only)."""
        ids = (call["txt_ids"], call["img_ids"])
        versions = tuple(t._version for t in ids)
        kept = self._rotary_full
        if idx is not None and kept is not None and all(a is b for a, b in zip(kept[0], ids)) and kept[1] == versions:
            full = kept[2]
            n_text = txt_ids.shape[0]
            rows = ctx.cache_rows(n_text, n_text, full[0].shape[0] - n_text)
            return tuple(r.index_select(0, rows) for r in full)
        rotary = self.model.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
        if idx is None:
            self._rotary_full = (ids, versions, rotary)
        return rotary

    def to_output(self, tokens, call):
        return tokens

    def macs(self, batch, n_query, n_image, n_text):
        total = n_query * (self._embed + self._proj_out) + n_text * self._context + self._sample
        for sizes, inner in self._dual:
            total += n_query * sizes.get("image", 0) + n_text * sizes.get("text", 0) + sizes.get("sample", 0)
            total += 2 * (n_query + n_text) * (n_image + n_text) * inner
        for sizes, inner in self._single:
            total += (n_query + n_text) * sizes.get("joint", 0) + sizes.get("sample", 0)
            total += 2 * (n_query + n_text) * (n_image + n_text) * inner
        return batch * total


def _plain_single_block(block: nn.Module) -> bool:
    """A diffusers FluxSingleTransformerBlock with its own forward and no hooks (offloading and caching
    hooks wrap ``forward``; those blocks are called as they are)."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    return (type(block) is FluxSingleTransformerBlock and "forward" not in vars(block)
            and getattr(block, "_diffusers_hook", None) is None and not block._forward_hooks
            and not block._forward_pre_hooks)


def _single_block(block: nn.Module, joint: torch.Tensor, temb: torch.Tensor, rotary) -> torch.Tensor:
    """``FluxSingleTransformerBlock.forward`` on the joint [text, image] tensor, the same operations
    without the concatenation at its start and the split at its end."""
    norm, gate = block.norm(joint, emb=temb)
    mlp = block.act_mlp(block.proj_mlp(norm))
    attn = block.attn(hidden_states=norm, image_rotary_emb=rotary)
    out = joint + gate.unsqueeze(1) * block.proj_out(torch.cat([attn, mlp], dim=2))
    if out.dtype == torch.float16:
        out = out.clip(-65504, 65504)
    return out


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter of a supported transformer, or ForetellError naming what is supported."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    if isinstance(model, SD3Transformer2DModel):
        return SD3Adapter(model)
    if isinstance(model, FluxTransformer2DModel):
        return FluxAdapter(model)
    raise ForetellError(f"unsupported model {type(model).__name__}; supported: {SUPPORTED}")
