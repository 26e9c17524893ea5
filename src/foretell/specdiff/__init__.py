"""SpecDiff: self-speculative multi-level feature caching for diffusion transformers."""
