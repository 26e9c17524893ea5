"""Feature parity between training and inference, predictor save/load, and clear errors."""

import json

import pytest
import torch

from tiny_models import make_predictors, tiny_model
from foretell.core.errors import ForetellError
from foretell.specee.adapters import decoder_access
from foretell.specee.collect import collect_one
from foretell.specee.draft import DraftHead, HeadDraft
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.predictor import LayerPredictors
from foretell.specee.train import build_examples, train_predictors

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7, 8]])


@pytest.mark.parametrize("layers", [None, [0, 3]], ids=["all-layers", "sparse-schedule"])
def test_features_equal_between_training_and_inference(tiny, layers):
    acc = decoder_access(tiny)
    torch.manual_seed(1)
    head = DraftHead(acc, torch.arange(0, 256, 2))             # a subset vocabulary, like the real head
    n_layers = tiny.config.num_hidden_layers
    preds = make_predictors(tiny, layers=layers, k=4)          # sparse: the mini head skips layers 1, 4
    seen = {}
    original = preds.score

    def recording_score(layer, feats):
        seen.setdefault(layer, []).append(feats.detach().clone())
        return original(layer, feats)

    preds.score = recording_score
    ee = SpecEE(tiny, preds, HeadDraft(head, k=4), SpecEEConfig(k=4, threshold=1.0))
    out = ee.generate(PROMPT, max_new_tokens=10, eos_token_id=None)
    # training path: the collected trajectory of the same prompt, features by build_examples
    item = collect_one(acc, PROMPT, 10, None)
    assert torch.equal(item["ids"].long(), out[0])
    ex = build_examples(acc, head, [item], k=4)
    assert sorted(seen) == (layers or list(range(n_layers - 1)))
    for layer in sorted(seen):
        inference = torch.cat(seen[layer])                   # tokens 2..10 (token 1 comes from the prefill)
        training = ex["feats"][layer, 1:]
        assert inference.shape == training.shape == (9, 12)
        torch.testing.assert_close(inference, training, atol=2e-3, rtol=1e-3)


def test_predictor_training_learns_and_round_trips(tmp_path, tiny):
    torch.manual_seed(0)
    preds = make_predictors(tiny, k=4)
    x = torch.randn(6, 600, 12)
    y = (x[..., 4] > 0).float()                              # a learnable rule on one feature
    mask = torch.arange(600) < 480
    trained, metrics = train_predictors(x, y, mask, preds.config, epochs=20, batch=64)
    assert metrics[0]["val_precision"] > 0.9 and metrics[0]["val_recall"] > 0.9
    trained.save(tmp_path)
    loaded = LayerPredictors.load(tmp_path)
    assert json.loads((tmp_path / "predictors.json").read_text())["num_layers"] == 6
    for layer in trained.config.layers:
        torch.testing.assert_close(loaded.score(layer, x[layer, :20]), trained.score(layer, x[layer, :20]))


def test_bad_inputs_give_clear_errors(tmp_path, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ForetellError, match="unsupported architecture 'gpt2'"):
        decoder_access(gpt2)
    other = tiny_model(layers=4)
    make_predictors(other).save(tmp_path)                    # predictors of a 4-layer model
    with pytest.raises(ForetellError, match="trained for model"):
        SpecEE(tiny, LayerPredictors.load(tmp_path), None)
    with pytest.raises(ForetellError, match="k must be between 1 and the vocabulary size 256"):
        SpecEE(tiny, make_predictors(tiny, k=300), None, SpecEEConfig(k=300))
    with pytest.raises(ForetellError, match="predictor files not found"):
        LayerPredictors.load(tmp_path / "missing")
    (tmp_path / "predictors.json").write_text("{not json")
    with pytest.raises(ForetellError, match="bad predictor config"):
        LayerPredictors.load(tmp_path)
    ee = SpecEE(tiny, make_predictors(tiny), None)
    with pytest.raises(ForetellError, match="method must be one of"):
        ee.generate(PROMPT, method="fast")
    with pytest.raises(ForetellError, match="needs a draft"):
        ee.generate(PROMPT, method="specee")
    with pytest.raises(ForetellError, match="kv_strategy"):
        SpecEE(tiny, make_predictors(tiny), None, SpecEEConfig(kv_strategy="copy"))


def test_train_all_writes_loadable_assets(tmp_path, tiny):
    from foretell.specee.train import train_all

    acc = decoder_access(tiny)
    torch.manual_seed(0)
    items = [collect_one(acc, torch.randint(0, 256, (1, 6)), 10, None) for _ in range(5)]
    cal = train_all(acc, items, tmp_path, k=4, draft_vocab_size=64, draft_epochs=1, predictor_epochs=2,
                    log=lambda *a: None)
    assert cal["tokens"] == 50 and len(cal["oracle_exit_histogram"]) == 6
    assert 1.0 <= cal["oracle_avg_layers"] <= 6.0
    ee = SpecEE.from_pretrained(tiny, predictors=tmp_path, threshold=1.0)
    assert ee.draft.head.vocab_ids.numel() == 64
    out = ee.generate(PROMPT, max_new_tokens=6, eos_token_id=None)
    ref = tiny.generate(PROMPT, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(out, ref)
    head2 = DraftHead.load(acc, tmp_path)
    toks, states = PROMPT[0, 1:], acc.norm(torch.randn(PROMPT.shape[1] - 1, 64))
    a, _ = ee.draft.head(toks.view(1, -1), states.view(1, -1, 64), torch.arange(1, PROMPT.shape[1]))
    b, _ = head2(toks.view(1, -1), states.view(1, -1, 64), torch.arange(1, PROMPT.shape[1]))
    torch.testing.assert_close(a, b)


def test_draft_head_trains_on_draft_only_sequences(tmp_path, tiny):
    from foretell.specee.collect import draft_pairs
    from foretell.specee.train import draft_accuracy, draft_sequences, train_all

    acc = decoder_access(tiny)
    torch.manual_seed(0)
    prompts = torch.randint(0, 256, (24, 6))
    out = tiny.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12,
                        do_sample=False, pad_token_id=0)
    draft_items = draft_pairs(acc, out, torch.ones_like(prompts), eos=None)
    seqs = draft_sequences(acc, draft_items)
    # the loss mask covers exactly the 12 outputs that predict generated tokens
    assert all(int(s["mask"].sum()) == 12 for s in seqs)
    items = [collect_one(acc, torch.randint(0, 256, (1, 6)), 8, None) for _ in range(5)]
    cal = train_all(acc, items, tmp_path, k=4, draft_vocab_size=256, draft_epochs=8, predictor_epochs=1,
                    draft_items=draft_items[:20], draft_val_items=draft_items[20:], draft_batch=2, draft_lr=2e-3,
                    log=lambda *a: None)
    hist = cal["draft_history"]
    assert cal["draft_training"]["on"] == "draft_items" and cal["draft_training"]["sequences"] == 20
    assert hist[-1]["train_ce"] < 0.8 * hist[0]["train_ce"]          # it learns the target's argmax
    head = DraftHead.load(acc, tmp_path)
    acc_train = draft_accuracy(head, draft_sequences(acc, draft_items[:20]), k=4)
    assert acc_train["tokens"] == 240 and acc_train["top1"] > 0.3
    assert set(cal["draft_accuracy"]) == {"collected", "held_out"}


def test_draft_labels_agree_between_collected_and_draft_only_data(tiny):
    from foretell.specee.collect import draft_pairs
    from foretell.specee.train import draft_sequences

    acc = decoder_access(tiny)
    item = collect_one(acc, PROMPT, 9, None)
    ids = item["ids"].long().view(1, -1)
    # draft_pairs of the finished trajectory (prompt part = PROMPT, "generated" = the 9 greedy tokens)
    pairs = draft_pairs(acc, ids, torch.ones(1, PROMPT.shape[1], dtype=torch.long), eos=None)
    a, b = draft_sequences(acc, [item])[0], draft_sequences(acc, pairs)[0]
    assert torch.equal(a["mask"], b["mask"]) and int(a["mask"].sum()) == 9
    assert torch.equal(a["labels"][a["mask"]], b["labels"][b["mask"]])
    assert torch.equal(a["tokens"], b["tokens"])
