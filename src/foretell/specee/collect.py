"""Collecting training data: full-model greedy generations and every layer's hidden state.

Draft-independent on purpose: we store the token ids, the final hidden states of all positions
(the draft head's teacher-forced inputs), every layer's pre-norm hidden state at the generated
positions, each layer's full-vocabulary argmax (the predictor's label source) and the
full-vocabulary features (the costly peer's input). Predictor features are computed later from
these states with the draft head's candidates, by :mod:`foretell.specee.features`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from foretell.core.progress import progress
from foretell.specee.adapters import DecoderAccess, all_layer_states
from foretell.specee.features import full_vocab_features


@torch.no_grad()
def collect_one(acc: DecoderAccess, prompt_ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> dict:
    """Greedy-generate with the full model, then record the per-layer states of that trajectory."""
    out = acc.model.generate(prompt_ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    ids = out[0]
    n_prompt = prompt_ids.shape[1]
    states = all_layer_states(acc, ids)                      # (L, S, d)
    gen = slice(n_prompt - 1, ids.shape[0] - 1)               # positions predicting generated tokens
    layer_h = states[:, gen]                                  # (L, G, d)
    argmax, fv = [], []
    for i in range(layer_h.shape[0]):
        logits = acc.logits(acc.norm(layer_h[i]))
        argmax.append(logits.argmax(-1))
        fv.append(full_vocab_features(logits))
    return {"ids": ids.to(torch.int32), "prompt_len": n_prompt, "final_h": states[-1].float(),
            "layer_h": layer_h.half(), "layer_argmax": torch.stack(argmax).to(torch.int32),
            "full_vocab_feats": torch.stack(fv).float()}


def collect(acc: DecoderAccess, tok, prompts: list[str], out_dir: Path, *, max_new_tokens: int = 48,
            shard_size: int = 20, reverse: bool = False) -> list[Path]:
    """Collect ``prompts`` into ``out_dir/shard_XXX.pt`` (existing shards are kept: resumable)."""
    from foretell.specee.loading import chat_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    starts = list(range(0, len(prompts), shard_size))
    for s in progress(starts[::-1] if reverse else starts, desc="collect shards"):
        path = out_dir / f"shard_{s // shard_size:03d}.pt"
        paths.append(path)
        if path.exists() or path.with_suffix(".tmp").exists():
            continue
        items = [collect_one(acc, chat_ids(tok, p), max_new_tokens, tok.eos_token_id)
                 for p in prompts[s:s + shard_size]]
        tmp = path.with_suffix(".tmp")
        torch.save(items, tmp)
        tmp.rename(path)
    return sorted(paths)


def load_shards(out_dir: Path) -> list[dict]:
    """All collected items of ``out_dir`` in prompt order."""
    items = []
    for p in sorted(Path(out_dir).glob("shard_*.pt")):
        items.extend(torch.load(p, weights_only=True))
    return items
