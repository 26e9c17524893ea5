"""Data collection: the batched paths give exactly the per-token data they stand for."""

import json

import torch
from transformers import DynamicCache

from foretell.specee.adapters import all_layer_states, decoder_access
from foretell.specee.collect import collect_many, collect_one, draft_pairs

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7, 8]])


@torch.no_grad()
def per_token_reference(model, prompt: torch.Tensor, n_new: int):
    """The definition: KV-cached greedy decoding, one token per step, every layer's state of that
    step from ``output_hidden_states`` and its own full-vocabulary argmax (final norm + LM head)."""
    acc = decoder_access(model)
    cache = DynamicCache()
    out = model(prompt, cache=cache, use_cache=True, output_hidden_states=True)
    ids, layer_h, layer_am = prompt[0].tolist(), [], []
    for step in range(n_new):
        hs = out.hidden_states                      # embeddings, layer 0 .. L-2 outputs, norm(layer L-1)
        last = [h[0, -1] for h in hs[1:-1]]
        final_normed = hs[-1][0, -1]
        am = [int(acc.logits(acc.norm(h)).argmax()) for h in last] + [int(acc.logits(final_normed).argmax())]
        tok = int(out.logits[0, -1].argmax())
        assert tok == am[-1]
        ids.append(tok)
        layer_h.append(torch.stack(last))
        layer_am.append(am)
        if step < n_new - 1:
            out = model(torch.tensor([[tok]]), cache=cache, use_cache=True, output_hidden_states=True)
    return torch.tensor(ids), torch.stack(layer_h, 1), torch.tensor(layer_am).T


def test_collect_one_equals_per_token_definition(tiny):
    acc = decoder_access(tiny)
    n_new = 12
    ids, layer_h, layer_am = per_token_reference(tiny, PROMPT, n_new)
    item = collect_one(acc, PROMPT, n_new, None)
    assert torch.equal(item["ids"].long(), ids)
    assert item["prompt_len"] == PROMPT.shape[1]
    assert torch.equal(item["layer_argmax"].long(), layer_am)                # every layer's label source
    L = tiny.config.num_hidden_layers
    assert item["layer_h"].shape == (L, n_new, tiny.config.hidden_size) and item["layer_h"].dtype == torch.float16
    torch.testing.assert_close(item["layer_h"][:-1].float(), layer_h, atol=2e-2, rtol=2e-3)
    assert item["final_h"].shape == (ids.numel(), tiny.config.hidden_size)
    assert item["final_h"].untyped_storage().nbytes() == item["final_h"].numel() * 4   # not a view of all layers


def test_draft_pairs_of_a_left_padded_batch_match_unpadded_sequences(tiny):
    acc = decoder_access(tiny)
    prompts = [PROMPT[0], torch.tensor([9, 31, 200, 4])]
    n_in = max(p.numel() for p in prompts)
    ids = torch.stack([torch.cat([torch.zeros(n_in - p.numel(), dtype=torch.long), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(n_in - p.numel()), torch.ones(p.numel())]) for p in prompts]).long()
    out = tiny.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    items = draft_pairs(acc, out, mask, eos=None)
    for p, it in zip(prompts, items):
        seq = it["ids"].long()
        assert it["prompt_len"] == p.numel() and torch.equal(seq[: p.numel()], p) and seq.numel() == p.numel() + 6
        ref = acc.norm(all_layer_states(acc, seq)[-1])                     # unpadded teacher-forced pass
        torch.testing.assert_close(it["final_normed"].float(), ref, atol=5e-2, rtol=2e-3)
        assert torch.equal(it["target_next"].long(), acc.logits(ref).argmax(-1))
        assert torch.equal(it["target_next"][p.numel() - 1:-1].long(), seq[p.numel():])   # greedy labels


def test_batched_collection_gives_the_same_items_as_one_by_one(tiny):
    acc = decoder_access(tiny)
    prompts = [PROMPT[0], torch.tensor([9, 31, 200, 4]), torch.tensor([77, 12, 5, 130, 64, 1])]
    items, fallbacks = collect_many(acc, prompts, 9, eos_token_id=None, pad_token_id=0)
    assert fallbacks == 0
    for p, got in zip(prompts, items):
        want = collect_one(acc, p.view(1, -1), 9, None)
        assert got.keys() == want.keys() and got["prompt_len"] == want["prompt_len"]
        for key in ("ids", "layer_argmax", "layer_h", "final_h", "full_vocab_feats"):
            assert torch.equal(got[key], want[key]), key


def test_draft_shards_are_kept_only_while_they_hold_the_same_prompts(tmp_path, monkeypatch):
    """Resumable draft collection: a finished shard is reused for the same prompts, and collected
    again when the prompt file grew (a short last shard) or changed (the sidecar's hash differs)."""
    from foretell.specee import collect

    calls = []

    def fake_batch(acc, tok, prompts, max_new_tokens):
        calls.extend(prompts)
        return [{"ids": torch.tensor([len(p)], dtype=torch.int32), "prompt": p} for p in prompts]

    monkeypatch.setattr(collect, "collect_draft_batch", fake_batch)

    from types import SimpleNamespace

    def run(prompts, model="m"):
        calls.clear()
        items = collect.collect_draft_data(SimpleNamespace(model_id=model), None, prompts, tmp_path, batch=2,
                                           shard_size=3)
        assert [it["prompt"] for it in items] == prompts
        return list(calls)

    first = [f"p{i}" for i in range(5)]
    assert run(first) == first                       # shards 0 (3 prompts) and 1 (2 prompts)
    assert run(first) == []                          # all kept
    grown = first + ["p5", "p6"]
    assert run(grown) == ["p3", "p4", "p5", "p6"]    # short shard 1 recollected, shard 2 new
    changed = ["q0"] + grown[1:]
    assert run(changed) == ["q0", "p1", "p2"]        # shard 0's hash no longer matches
    (tmp_path / "draft_001.json").unlink()           # a shard from before the sidecars:
    assert run(changed) == []                        # kept while its length matches
    assert run(changed[:3]) == []                    # shrunk: shard 0 kept, shards 1-2 removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draft_000.json", "draft_000.pt"]
    assert [it["prompt"] for it in collect.load_draft_shards(tmp_path)] == changed[:3]
    assert run(changed[:3], model="other") == changed[:3]      # another model's data is not reused
    side = tmp_path / "draft_000.json"
    old = {k: v for k, v in json.loads(side.read_text()).items() if k != "model"}
    side.write_text(json.dumps(old))                 # a sidecar from before stamps named the model:
    assert run(changed[:3], model="m") == []         # kept (compared without the model)
