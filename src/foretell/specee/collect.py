"""Collecting training data: full-model greedy generations and every layer's hidden state.

Fast path: the greedy generations of a shard are decoded as one left-padded batch, then each
trajectory gets ONE teacher-forced pass (every layer's state at every position) and per layer ONE
batched norm + LM-head product for the labels; a trajectory that its unpadded teacher-forced pass
does not reproduce is collected again one by one (tested to give the same data as the old path).

Draft-independent on purpose: we store the token ids, the final hidden states of all positions
(the draft head's teacher-forced inputs), every layer's pre-norm hidden state at the generated
positions, each layer's full-vocabulary argmax (the predictor's label source) and the
full-vocabulary features (the costly peer's input). Predictor features are computed later from
these states with the draft head's candidates, by :mod:`foretell.specee.features`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from foretell.core.errors import ForetellError
from foretell.core.progress import progress
from foretell.specee.adapters import DecoderAccess, all_layer_states
from foretell.specee.features import full_vocab_features


@torch.no_grad()
def trajectory_item(acc: DecoderAccess, ids: torch.Tensor, n_prompt: int) -> dict:
    """One teacher-forced pass over a finished trajectory ``ids`` (S,) whose first ``n_prompt`` ids
    are the prompt: every layer's state at every position at once, then per layer ONE batched
    norm + LM-head product over the generated positions for its argmax (the label source) and
    the full-vocabulary features. Computed on the model's device, returned on the CPU (the
    collected data files do not depend on where they were made)."""
    states = all_layer_states(acc, ids)                      # (L, S, d)
    gen = slice(n_prompt - 1, ids.shape[0] - 1)               # positions predicting generated tokens
    layer_h = states[:, gen]                                  # (L, G, d)
    argmax, fv = [], []
    for i in range(layer_h.shape[0]):
        logits = acc.logits(acc.norm(layer_h[i]))
        argmax.append(logits.argmax(-1))
        fv.append(full_vocab_features(logits))
    cpu = torch.device("cpu")
    return {"ids": ids.to(cpu, torch.int32), "prompt_len": n_prompt, "final_h": states[-1].float().to(cpu).clone(),
            "layer_h": layer_h.half().to(cpu), "layer_argmax": torch.stack(argmax).to(cpu, torch.int32),
            "full_vocab_feats": torch.stack(fv).float().to(cpu)}


@torch.no_grad()
def collect_one(acc: DecoderAccess, prompt_ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> dict:
    """Greedy-generate with the full model, then record the per-layer states of that trajectory."""
    out = acc.model.generate(prompt_ids.to(acc.device), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    return trajectory_item(acc, out[0], prompt_ids.shape[1])


@torch.no_grad()
def collect_many(acc: DecoderAccess, prompts: list[torch.Tensor], max_new_tokens: int, eos_token_id=None,
                 pad_token_id: int = 0) -> tuple[list[dict], int]:
    """:func:`collect_one` for several prompts (1-D id tensors) with the greedy decoding batched.

    The prompts are generated as one left-padded batch (~6x the throughput of one row on a CPU);
    each trajectory is then checked against its own unpadded teacher-forced pass: the final
    layer's argmax must reproduce every generated token (the greedy definition). A trajectory that
    fails (padding flipped a near-tie) is collected again with :func:`collect_one`. Returns the
    items (same data as :func:`collect_one`) and the number of such fallbacks.
    """
    n_in = max(p.numel() for p in prompts)
    ids = torch.full((len(prompts), n_in), pad_token_id, dtype=torch.long, device=acc.device)
    mask = torch.zeros(len(prompts), n_in, dtype=torch.long, device=acc.device)
    for b, p in enumerate(prompts):
        ids[b, n_in - p.numel():], mask[b, n_in - p.numel():] = p, 1
    out = acc.model.generate(input_ids=ids, attention_mask=mask,
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                             pad_token_id=pad_token_id)
    items, fallbacks = [], 0
    for b, p in enumerate(prompts):
        gen = out[b, n_in:].tolist()
        if eos_token_id is not None and eos_token_id in gen:
            gen = gen[: gen.index(eos_token_id) + 1]
        seq = torch.cat([p.long().cpu(), torch.tensor(gen, dtype=torch.long, device="cpu")])
        item = trajectory_item(acc, seq, p.numel()) if gen else None
        if item is None or not torch.equal(item["layer_argmax"][-1].long(), seq[p.numel():]):
            item, fallbacks = collect_one(acc, p.view(1, -1), max_new_tokens, eos_token_id), fallbacks + 1
        items.append(item)
    return items, fallbacks


def collect(acc: DecoderAccess, tok, prompts: list[str], out_dir: Path, *, max_new_tokens: int = 48,
            shard_size: int = 20, reverse: bool = False) -> list[Path]:
    """Collect ``prompts`` into ``out_dir/shard_XXX.pt``; returns the shards' paths in order.

    Resumable, but a finished shard is kept only while it holds the same data: each shard's
    ``.json`` sidecar records a hash of its prompts, their count, ``max_new_tokens`` and the model
    (``acc.model_id``), and a shard whose sidecar differs is collected again. A shard without a
    sidecar (from before the sidecars) is loaded once and kept only if its items are exactly these
    prompts' tokens, generated up to ``max_new_tokens`` (or an earlier eos) with this model's layer
    count and width; it is then stamped, else collected again. A shard whose ``.tmp`` exists (and
    that is not finished) is skipped: another worker (``reverse``) is collecting it. Shards past
    the last prompt are left alone (:func:`load_shards` callers take the first ``len(prompts)``
    items). An unreadable shard is a one-line ForetellError naming it."""
    from foretell.specee.loading import chat_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    starts = list(range(0, len(prompts), shard_size))
    for s in progress(starts[::-1] if reverse else starts, desc="collect shards"):
        path = out_dir / f"shard_{s // shard_size:03d}.pt"
        paths.append(path)
        chunk = prompts[s:s + shard_size]
        stamp = _stamp(chunk, max_new_tokens, model=acc.model_id)
        if _stamped(path, stamp) or _legacy_shard_matches(acc, tok, path, chunk, stamp):
            continue
        tmp = path.with_suffix(".tmp")
        if tmp.exists():
            continue
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        items, _ = collect_many(acc, [chat_ids(tok, p)[0] for p in chunk], max_new_tokens, tok.eos_token_id, pad)
        torch.save(items, tmp)
        tmp.rename(path)
        _write_sidecar(path, stamp)
    return sorted(paths)


def _stamp(chunk: list[str], max_new_tokens: int, **extra) -> dict:
    """What a shard's ``.json`` sidecar records about how it was made."""
    return {"prompts_sha256": hashlib.sha256("\n".join(chunk).encode()).hexdigest(), "n_prompts": len(chunk),
            "max_new_tokens": max_new_tokens, **extra}


def _sidecar(path: Path) -> dict | None:
    """The ``.json`` sidecar of shard ``path``: None when there is none, {} (matches no stamp) when
    it is damaged or half-written."""
    side = path.with_suffix(".json")
    if not side.exists():
        return None
    try:
        got = json.loads(side.read_text())
    except (ValueError, OSError):
        return {}
    return got if isinstance(got, dict) else {}


def _write_sidecar(path: Path, stamp: dict) -> None:
    """Record ``stamp`` in the ``.json`` sidecar of shard ``path`` (read back by :func:`_sidecar`)."""
    path.with_suffix(".json").write_text(json.dumps(stamp) + "\n")


def _stamped(path: Path, stamp: dict) -> bool:
    """A finished shard whose sidecar records ``stamp``."""
    return path.exists() and _sidecar(path) == stamp


def _legacy_shard_matches(acc: DecoderAccess, tok, path: Path, chunk: list[str], stamp: dict) -> bool:
    """A finished shard WITHOUT a sidecar (collected before the sidecars) whose items are exactly
    the collection of ``chunk`` with ``stamp["max_new_tokens"]`` on this model (same prompt
    tokens, every trajectory ``max_new_tokens`` long or ended early by eos, this model's layer count
    and width): then it gets its sidecar and True; else False (collect it again)."""
    from foretell.specee.loading import chat_ids

    if not path.exists() or _sidecar(path) is not None:
        return False
    items = _load_shard(path)
    if len(items) != len(chunk):
        return False
    n_new, eos = stamp["max_new_tokens"], getattr(tok, "eos_token_id", None)
    for prompt, it in zip(chunk, items):
        ids, n_prompt, layer_h = it["ids"].long(), it.get("prompt_len"), it.get("layer_h")
        if not isinstance(n_prompt, int):
            return False
        gen = ids.numel() - n_prompt
        if not torch.equal(ids[:n_prompt], chat_ids(tok, prompt)[0].long().cpu()):
            return False
        if not (gen == n_new or (0 < gen < n_new and eos is not None and int(ids[-1]) == eos)):
            return False
        if not isinstance(layer_h, torch.Tensor) or tuple(layer_h.shape) != (acc.num_layers, gen, acc.hidden_size):
            return False
    _write_sidecar(path, stamp)
    return True


def _load_shard(path: Path) -> list[dict]:
    """The items of a collected shard (``shard_XXX.pt`` or ``draft_XXX.pt``); a file that is not
    one (damaged, truncated, something else) is a one-line ForetellError that names it."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # torch's notes on foreign pickles
            items = torch.load(path, weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise ForetellError(f"collected data shard {path} cannot be read ({type(exc).__name__}); delete it "
                            f"(and its .json) to collect it again") from None
    if not isinstance(items, list) or not all(isinstance(it, dict) and isinstance(it.get("ids"), torch.Tensor)
                                              for it in items):
        raise ForetellError(f"collected data shard {path} does not hold collected items; delete it "
                            f"(and its .json) to collect it again")
    return items


@torch.no_grad()
def collect_draft_batch(acc: DecoderAccess, tok, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Draft-head training pairs for several prompts at once (cheap: no per-layer states).

    The prompts are generated greedily as one left-padded batch (batched decoding is ~6x the
    throughput of one row on a CPU), then ONE teacher-forced forward of the whole batch gives the
    final normalised state of every position and the full model's argmax there (the draft's label).
    Padding can flip a near-tied greedy choice against an unpadded run; that does not matter here:
    every label is the target's own argmax on the stored sequence. Per sequence: ``ids`` (S,),
    ``prompt_len``, ``final_normed`` (S, d) float16 and ``target_next`` (S,) (argmax after position p).
    """
    from foretell.specee.loading import chat_texts
    eos = tok.eos_token_id
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(chat_texts(tok, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side
    enc = enc.to(acc.device)
    out = acc.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos)
    return draft_pairs(acc, out, enc.attention_mask, eos)


@torch.no_grad()
def draft_pairs(acc: DecoderAccess, out: torch.Tensor, prompt_mask: torch.Tensor, eos: int | None) -> list[dict]:
    """Per-sequence draft training data of a left-padded batch ``out`` (B, n_in + new) whose prompt
    part has attention mask ``prompt_mask`` (B, n_in): one teacher-forced forward with the padding
    masked and positions counted from each sequence's first real token; each sequence is cut after
    its first generated ``eos``. Computed on the model's device; the items are on the CPU."""
    n_in = prompt_mask.shape[1]
    out = out.to(acc.device)
    mask = torch.cat([prompt_mask.long().to(acc.device),
                      torch.ones(out.shape[0], out.shape[1] - n_in, dtype=torch.long, device=acc.device)], 1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    normed = acc.model.model(input_ids=out, attention_mask=mask, position_ids=positions).last_hidden_state
    items = []
    for b in range(out.shape[0]):
        start = int((prompt_mask[b] == 0).sum())
        gen = out[b, n_in:].tolist()
        end = n_in + (gen.index(eos) + 1 if eos is not None and eos in gen else len(gen))
        states = normed[b, start:end]
        target = torch.cat([acc.logits(c).argmax(-1) for c in states.split(64)])
        items.append({"ids": out[b, start:end].to("cpu", torch.int32), "prompt_len": n_in - start,
                      "final_normed": states.half().cpu(), "target_next": target.to("cpu", torch.int32)})
    return items


def collect_draft_data(acc: DecoderAccess, tok, prompts: list[str], out_dir: Path, *, max_new_tokens: int = 48,
                       batch: int = 16, shard_size: int = 160) -> list[dict]:
    """:func:`collect_draft_batch` over ``prompts`` in batches, saved as ``out_dir/draft_XXX.pt``
    shards (finished shards are kept: resumable); returns all items in prompt order.

    A kept shard must hold the same prompts: each shard's ``.json`` sidecar records a hash of its
    prompts and ``max_new_tokens`` (a shard without one, from before the sidecars, must at least
    hold as many items as its prompts); a shard that does not match is collected again, and shards
    past the last prompt are removed, so a prompt file that grew, shrank or changed never leaves a
    stale or short shard for :func:`load_draft_shards`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for s in progress(range(0, len(prompts), shard_size), desc="draft data shards",
                      total=-(-len(prompts) // shard_size)):
        path = out_dir / f"draft_{s // shard_size:03d}.pt"
        chunk = prompts[s:s + shard_size]
        stamp = _stamp(chunk, max_new_tokens, model=acc.model_id)
        got = _kept_shard(path, stamp)
        if got is None:
            got = []
            for b in range(0, len(chunk), batch):
                got.extend(collect_draft_batch(acc, tok, chunk[b:b + batch], max_new_tokens))
            tmp = path.with_suffix(".tmp")
            torch.save(got, tmp)
            tmp.rename(path)
            _write_sidecar(path, stamp)
        items.extend(got)
    n_shards = -(-len(prompts) // shard_size)
    for stale in out_dir.glob("draft_*.pt"):             # a shorter prompt file: drop the shards past it
        if stale.stem[6:].isdigit() and int(stale.stem[6:]) >= n_shards:
            stale.unlink()
            stale.with_suffix(".json").unlink(missing_ok=True)
    return items


def _kept_shard(path: Path, stamp: dict) -> list[dict] | None:
    """The items of a finished shard that matches ``stamp``, else None (collect it again). A sidecar
    written before stamps named the model (no ``model`` key) is compared without it."""
    if not path.exists():
        return None
    side = _sidecar(path)
    if side is not None and "model" not in side:
        stamp = {k: v for k, v in stamp.items() if k != "model"}
    if side is not None and side != stamp:
        return None
    got = _load_shard(path)
    return got if len(got) == stamp["n_prompts"] else None


def load_draft_shards(out_dir: Path) -> list[dict]:
    """All draft-only items of ``out_dir`` (``draft_XXX.pt``) in prompt order; [] if none."""
    items = []
    for p in sorted(Path(out_dir).glob("draft_*.pt")):
        items.extend(_load_shard(p))
    return items


def load_shards(out_dir: Path) -> list[dict]:
    """All collected items of ``out_dir`` in prompt order."""
    items = []
    for p in sorted(Path(out_dir).glob("shard_*.pt")):
        items.extend(_load_shard(p))
    return items
