"""SpecEE: speculative early exiting for LLM decoding (Llama/Mistral/Qwen2-style transformers models).

Heavy modules (torch, transformers) are imported lazily so ``import foretell.specee`` stays cheap.
"""

__all__ = ["SpecEE", "SpecEEConfig", "LayerPredictors", "PredictorConfig", "DraftHead", "HeadDraft",
           "AssistantDraft", "decoder_access", "run_bench"]

_WHERE = {"SpecEE": "engine", "SpecEEConfig": "engine", "LayerPredictors": "predictor",
          "PredictorConfig": "predictor", "DraftHead": "draft", "HeadDraft": "draft",
          "AssistantDraft": "draft", "decoder_access": "adapters", "run_bench": "bench"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"foretell.specee.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'foretell.specee' has no attribute {name!r}")
