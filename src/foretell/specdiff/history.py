"""Per-token history of output features, and assembly of a cached step's output."""

from __future__ import annotations

import torch

from foretell.specdiff.levels import C3, blend_weights


class FeatureHistory:
    """The last ``depth`` outputs of every image token and the sigma each was made at.

    Pushing whole outputs (``idx=None``) every step keeps the last main steps' outputs; pushing only
    the computed tokens keeps each token's last computed outputs.
    features: (depth, B, N, F), slot 0 = most recent; sigmas: (depth, N), NaN where empty.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.reset_state()

    def reset_state(self) -> None:
        """Forget every stored feature."""
        self.features: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None

    def update(self, tokens: torch.Tensor, idx: torch.Tensor | None, sigma: float) -> None:
        """Push freshly computed outputs (B, n, F) of tokens ``idx`` (all tokens if None)."""
        tokens = tokens.detach()
        if self.features is None:
            if idx is not None:
                raise RuntimeError("SpecDiff: the first step of a run must compute every token")
            b, n, f = tokens.shape
            self.features = tokens.new_zeros((self.depth, b, n, f))
            self.sigmas = torch.full((self.depth, n), float("nan"), dtype=torch.float64, device=tokens.device)
        if idx is None:
            self.features = torch.cat([tokens[None], self.features[:-1]])
            self.sigmas = torch.cat([torch.full_like(self.sigmas[:1], sigma), self.sigmas[:-1]])
            return
        if self.depth > 1:
            self.features[1:, :, idx] = self.features[:-1, :, idx].clone()
            self.sigmas[1:, idx] = self.sigmas[:-1, idx].clone()
        self.features[0, :, idx] = tokens.to(self.features.dtype)
        self.sigmas[0, idx] = sigma

    def assemble(self, levels: torch.Tensor, computed: torch.Tensor, idx: torch.Tensor, sigma: float) -> torch.Tensor:
        """Output of a cached step: C1 fresh, C2 last feature, C3 blend of the last features."""
        if self.depth > 1 and levels.device.type != "cpu":
            out = self._blend_all(levels, sigma)
        else:
            out = self.features[0].clone()
            blended = (levels == C3).nonzero().flatten()
            if blended.numel() and self.depth > 1:
                w = blend_weights(self.sigmas[:, blended], sigma).to(out.dtype)
                out[:, blended] = torch.einsum("hn,hbnf->bnf", w, self.features[:, :, blended])
        out[:, idx] = computed.to(out.dtype)
        return out

    def _blend_all(self, levels: torch.Tensor, sigma: float) -> torch.Tensor:
        """C3 blend without selecting the C3 tokens first: on a GPU, boolean selection makes the step
        wait for the device; blending every token and keeping it where the level is C3 does not."""
        w = blend_weights(self.sigmas, sigma).to(self.features.dtype)
        mixed = torch.einsum("hn,hbnf->bnf", w, self.features)
        return torch.where((levels == C3)[None, :, None], mixed, self.features[0])
