"""Tiny random decoder models, exit predictors and a permissive fake draft for SpecEE's tests and
its GPU check.

Plain module (no pytest import) so benchmarks/gpu/check_specee.py can use it on machines without pytest.
"""

import torch

from foretell.specee.draft import Draft
from foretell.specee.predictor import LayerPredictors, PredictorConfig


PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])


def hf_greedy(model, n: int) -> torch.Tensor:
    """transformers' own greedy decoding of ``PROMPT``: the reference every lossless path must equal."""
    return model.generate(PROMPT, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)


def assert_cache_is_teacher_forced(model, stepper, ids: torch.Tensor, values: bool = False) -> None:
    """The stepper's KV cache (after ``flush``) equals a teacher-forced pass over ``ids`` (1, n),
    for the first n cached tokens: lazily deferred layers must have produced exact keys/values."""
    from transformers import DynamicCache

    stepper.flush()
    n = min(stepper.num_tokens, ids.shape[1])
    cache = DynamicCache()
    model(ids[:, :n], cache=cache, use_cache=True)
    for i in range(model.config.num_hidden_layers):
        torch.testing.assert_close(stepper.cache.layers[i].keys[..., :n, :], cache.layers[i].keys, atol=1e-4, rtol=1e-4)
        if values:
            torch.testing.assert_close(stepper.cache.layers[i].values[..., :n, :], cache.layers[i].values,
                                       atol=1e-4, rtol=1e-4)


def tiny_model(kind: str = "llama", layers: int = 6, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, tie_word_embeddings=True)
    cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
                          "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
    model = model_cls(cfg_cls(**common)).eval()
    # sharpen the random model so its argmax is stable and layer-wise distinct
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)
    return model


def varied_model(layers: int = 6, seed: int = 0):
    """A tiny untied Llama whose greedy output varies (``tiny_model`` mostly repeats its input token)
    and whose early layers often disagree with the last one: wrong exits are common."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(4.0)
        for blk in model.model.layers:
            blk.mlp.down_proj.weight.mul_(8.0)
            blk.self_attn.o_proj.weight.mul_(8.0)
        model.lm_head.weight.mul_(8.0)
    return model


def make_predictors(model, layers=None, bias: float = 0.0, k: int = 4, seed: int = 0) -> LayerPredictors:
    torch.manual_seed(seed)
    n = model.config.num_hidden_layers
    layers = list(range(n - 1)) if layers is None else layers
    cfg = PredictorConfig(model_id="tiny", num_layers=n, hidden_size=model.config.hidden_size,
                          vocab_size=model.config.vocab_size, k=k, in_features=3 * k, layers=layers,
                          offline_layers=layers)
    p = LayerPredictors(cfg)
    with torch.no_grad():
        for mlp in p.mlps.values():
            mlp[2].bias.fill_(bias)
    return p.eval()


class AllTokensDraft(Draft):
    """A fake draft whose scores are constant: with k = vocab every token is a candidate."""

    def __init__(self, vocab: int, k: int):
        self.vocab, self.k = vocab, k
        self.reset_state()

    def reset_state(self):
        self._len = 0

    def feed(self, tokens, states):
        self._len += tokens.numel()
        return torch.linspace(1.0, 0.0, self.vocab), None

    def crop(self, length):
        self._len = length

    def length(self):
        return self._len
