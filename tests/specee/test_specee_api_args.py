"""Bad arguments to SpecEE's public Python API (``SpecEE(...)``, ``SpecEEConfig``,
``SpecEE.from_pretrained``, ``SpecEE.generate``): a one-line ForetellError saying what was wrong and
what is accepted, before any work, instead of a raw torch/TypeError/AttributeError from deep inside
or a silently coerced value. Valid input in every accepted form decodes exactly as before."""

import math

import numpy as np
import pytest
import torch
from transformers import BatchEncoding

from tiny_models import PROMPT, AllTokensDraft, hf_greedy, make_predictors
from foretell.core.errors import ForetellError
from foretell.specee.engine import SpecEE, SpecEEConfig


def engine(model, **cfg) -> SpecEE:
    cfg.setdefault("linear_kernel", "torch")          # leave the shared tiny model's linears alone
    return SpecEE(model, make_predictors(model, k=4), AllTokensDraft(256, 4), SpecEEConfig(**cfg))


@pytest.fixture(scope="module")
def ee(tiny):
    return engine(tiny)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg, msg
    return msg


def refused(fn, match: str) -> str:
    with pytest.raises(ForetellError, match=match) as info:
        fn()
    return one_line(info)


# ---- input_ids ---------------------------------------------------------------------------------

class _Encoding(dict):
    """What a tokenizer returns (transformers' BatchEncoding is a mapping too)."""


@pytest.mark.parametrize("ids, match", [
    (PROMPT.float(), "must hold integer token ids, got dtype float32"),
    (PROMPT.float() + 0.7, "must hold integer token ids"),
    (PROMPT > 10, "must hold integer token ids, got dtype bool"),
    (PROMPT.numpy().astype(np.float64), "must hold integer token ids, got dtype float64"),
    ([[1.5, 2.0]], "must hold integer token ids"),
    ("hello", r"input_ids is text \(str\); tokenize it first"),
    (None, "input_ids is None"),
    ({"input_ids": PROMPT}, r'input_ids is a dict \(tokenizer output\?\); pass enc\["input_ids"\]'),
    (_Encoding(input_ids=PROMPT, attention_mask=torch.ones_like(PROMPT)), r'pass enc\["input_ids"\]'),
    (BatchEncoding({"input_ids": PROMPT}), r'input_ids is a BatchEncoding \(tokenizer output\?\); pass enc\["input_ids"\]'),
    ([[1, 2, 3], [4, 5]], "input_ids of type list is not a rectangular array of token ids"),
    ([1, "a"], "not a rectangular array of token ids"),
    (PROMPT[None], r"input_ids must be \(1, n\) or \(n,\), got shape \(1, 1, 7\)"),
    (PROMPT.repeat(2, 1)[None], r"got shape \(1, 2, 7\)"),
    (torch.tensor(5), r"input_ids must be \(1, n\) or \(n,\), got shape \(\)"),
    (PROMPT.repeat(2, 1), r"batch 1\), got batch 2"),
    (PROMPT.T, "got batch 7"),
    (PROMPT[:, :0], "input_ids is empty"),
    (PROMPT + 300, r"token ids in \[0, 256\), got \[303, 550\]"),
    (PROMPT - 10, r"token ids in \[0, 256\), got \[-7, 240\]"),
    (PROMPT.to("meta"), "on the meta device"),
])
def test_bad_input_ids(ee, ids, match):
    refused(lambda: ee.generate(ids, max_new_tokens=3, eos_token_id=None), match)


def test_input_ids_in_every_accepted_form_decode_alike(ee, tiny):
    ref = hf_greedy(tiny, 4)
    forms = [PROMPT, PROMPT[0], PROMPT.tolist(), PROMPT[0].tolist(), tuple(PROMPT[0].tolist()), PROMPT.int(),
             PROMPT.to(torch.uint8), PROMPT.to(torch.int16), PROMPT.numpy(), PROMPT[0].numpy().astype(np.int32)]
    for ids in forms:
        for method in ("full", "specee"):
            out = ee.generate(ids, max_new_tokens=4, eos_token_id=None, method=method)
            assert out.dtype == torch.long and out.shape == (1, PROMPT.shape[1] + 4), (type(ids), method)
            if method == "full":
                assert torch.equal(out, ref), type(ids)


# ---- max_new_tokens ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1, 2.5, "5", None, math.inf, math.nan, True, False, torch.tensor(3)])
def test_bad_max_new_tokens(ee, value):
    refused(lambda: ee.generate(PROMPT, max_new_tokens=value, eos_token_id=None),
            r"max_new_tokens must be an int >= 0 \(0 returns the prompt\), got ")


def test_max_new_tokens_zero_returns_the_prompt_and_numpy_ints_count(ee):
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=0, eos_token_id=None), PROMPT)
    assert ee.generate(PROMPT, max_new_tokens=np.int64(3), eos_token_id=None).shape == (1, PROMPT.shape[1] + 3)


# ---- sampling knobs ----------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(do_sample="yes"), "do_sample must be True or False, got 'yes'"),
    (dict(do_sample=1), "do_sample must be True or False, got 1"),
    (dict(do_sample=None), "do_sample must be True or False, got None"),
    (dict(do_sample=True, temperature=0), "temperature must be > 0 when sampling, got 0; use do_sample=False"),
    (dict(do_sample=True, temperature=-1), r"temperature must be a finite number >= 0 \(> 0 when sampling"),
    (dict(do_sample=False, temperature=-1), "temperature must be a finite number >= 0"),
    (dict(do_sample=True, temperature=math.nan), "temperature must be a finite number"),
    (dict(do_sample=True, temperature=math.inf), "temperature must be a finite number"),
    (dict(do_sample=True, temperature="0.7"), "temperature must be a finite number"),
    (dict(do_sample=True, top_k=-5), r"top_k must be an int >= 0 \(0 = no top-k filter\), got -5"),
    (dict(do_sample=True, top_k=2.5), "top_k must be an int >= 0 .*, got 2.5"),
    (dict(do_sample=True, top_k=None), "top_k must be an int >= 0"),
    (dict(do_sample=True, top_p=0), r"top_p must be in \(0, 1\], got 0"),
    (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(do_sample=True, top_p=math.nan), r"top_p must be in \(0, 1\]"),
    (dict(do_sample=True, top_p="0.9"), r"top_p must be in \(0, 1\]"),
    (dict(do_sample=True, generator="seed"), "generator must be a torch.Generator .* got str 'seed'"),
    (dict(do_sample=True, generator=42), "generator must be a torch.Generator .* got int 42"),
    (dict(do_sample=False, generator=42), "generator must be a torch.Generator"),
])
@pytest.mark.parametrize("method", ["specee", "full", "speculative"])
def test_bad_sampling_arguments(ee, kw, match, method):
    refused(lambda: ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, method=method, **kw), match)


def test_good_sampling_arguments_are_accepted(ee, tiny):
    ref = hf_greedy(tiny, 3)
    # greedy ignores the sampling knobs (transformers does too), temperature 0 included
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, method="full", temperature=0), ref)
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, method="full", do_sample=np.bool_(False),
                                   top_k=np.int64(5), top_p=np.float32(0.5), temperature=np.float64(0.5)), ref)
    g = torch.Generator().manual_seed(0)
    out = ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, method="full", do_sample=True, top_k=1000,
                      top_p=1, temperature=2, generator=g)
    assert out.shape == (1, PROMPT.shape[1] + 3)
    # top_k=1 sampling is greedy
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, method="full", do_sample=True,
                                   top_k=1, generator=g), ref)


def test_token_picker_checks_its_arguments_too():
    from foretell.specee.generate import TokenPicker

    with pytest.raises(ForetellError, match="top_k must be an int >= 0"):
        TokenPicker(do_sample=True, top_k=2.5)
    with pytest.raises(ForetellError, match="generator must be a torch.Generator"):
        TokenPicker(do_sample=True, generator="seed")


# ---- eos_token_id ------------------------------------------------------------------------------

@pytest.mark.parametrize("eos", [-1, 256, 1000, 2.5, "</s>", True, [5, "x"], [5, 300], (5, -2), [[5]],
                                 torch.tensor([1.0]), {"eos": 5}, list(range(300))])
def test_bad_eos_token_id(ee, eos):
    msg = refused(lambda: ee.generate(PROMPT, max_new_tokens=3, eos_token_id=eos),
                  r"eos_token_id must be an int in \[0, 256\), a list of such ints, or None, got ")
    assert len(msg) < 200, msg


def test_eos_token_id_in_every_accepted_form_stops_alike(ee):
    full = ee.generate(PROMPT, max_new_tokens=6, eos_token_id=None, method="full")
    n = PROMPT.shape[1]
    stop = int(full[0, n + 1])
    want = full[:, : n + 1 + full[0, n:].tolist().index(stop)]
    for eos in (stop, np.int64(stop), [stop], (255 if stop != 255 else 254, stop), {stop}, torch.tensor(stop),
                torch.tensor([stop])):
        assert torch.equal(ee.generate(PROMPT, max_new_tokens=6, eos_token_id=eos, method="full"), want), eos
    assert torch.equal(ee.generate(PROMPT, max_new_tokens=6, eos_token_id=[], method="full"), full)


# ---- streamer / callback -----------------------------------------------------------------------

class _PutOnly:
    def put(self, value):
        pass


@pytest.mark.parametrize("kw, match", [
    (dict(streamer="x"), r"streamer must have put\(\) and end\(\) methods .* str lacks put\(\) and end\(\)"),
    (dict(streamer=_PutOnly()), r"_PutOnly lacks end\(\)"),
    (dict(callback=5), "callback must be a callable taking each new token id .* got int 5"),
    (dict(callback="print"), "callback must be a callable"),
])
def test_bad_streamer_or_callback(ee, kw, match):
    refused(lambda: ee.generate(PROMPT, max_new_tokens=3, eos_token_id=None, **kw), match)


# ---- SpecEEConfig ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(k=2.5), r"k must be between 1 and the vocabulary size 256 \(an int.*got 2.5"),
    (dict(k="4"), "k must be between 1 and the vocabulary size 256 .*got '4'"),
    (dict(k=4.0), "k must be between 1 and the vocabulary size 256 .*got 4.0"),
    (dict(k=None), "k must be between 1 .*got None"),
    (dict(k=math.nan), "k must be between 1 .*got nan"),
    (dict(k=True), "k must be between 1 .*got True"),
    (dict(k=0), "k must be between 1 .*got 0"),
    (dict(threshold="0.5"), r"threshold must be a number in \[0, 1\] or None .*got '0.5'"),
    (dict(threshold=math.nan), r"threshold must be a number in \[0, 1\]"),
    (dict(threshold=1.5), r"threshold must be a number in \[0, 1\]"),
    (dict(threshold=True), r"threshold must be a number in \[0, 1\]"),
    (dict(kv_strategy=["lazy"]), "kv_strategy must be one of lazy, fill"),
    (dict(online="no"), "online must be True or False, got 'no'"),
    (dict(online=1), "online must be True or False, got 1"),
    (dict(check_exits="no"), "check_exits must be True or False, got 'no'"),
    (dict(window=-3), r"window must be an int >= 0 \(recent exits the online layers follow; 0 = none\), got -3"),
    (dict(window=2.5), "window must be an int >= 0 .*got 2.5"),
    (dict(radius=-1), r"radius must be an int >= 0 \(layers around a recent exit\), got -1"),
    (dict(radius=1.5), "radius must be an int >= 0"),
    (dict(gamma=0), r"gamma \(draft chain length\) must be an int >= 1, got 0"),
    (dict(gamma=2.5), r"gamma \(draft chain length\) must be an int >= 1, got 2.5"),
    (dict(gamma=math.nan), r"gamma \(draft chain length\) must be an int >= 1, got nan"),
    (dict(gamma="3"), r"gamma \(draft chain length\) must be an int >= 1, got '3'"),
    (dict(tree="2"), r"tree must be a sequence of side-leaf counts per depth \(ints\).*got '2'"),
    (dict(tree=(2.5,)), "tree must be a sequence of side-leaf counts"),
    (dict(tree=2), "tree must be a sequence of side-leaf counts"),
])
def test_bad_config_fields(tiny, kw, match):
    refused(lambda: SpecEE(tiny, make_predictors(tiny, k=4), None, SpecEEConfig(**kw)), match)


def test_config_accepts_numpy_ints_and_window_zero(tiny, ee):
    cfg = SpecEEConfig(k=np.int64(4), gamma=np.int32(2), window=0, radius=np.int64(1), tree=[np.int64(1)],
                       threshold=np.float32(0.5), linear_kernel="torch")
    e = SpecEE(tiny, make_predictors(tiny, k=4), AllTokensDraft(256, 4), cfg)
    assert (type(cfg.k), type(cfg.gamma), type(cfg.radius), cfg.tree) == (int, int, int, (1,))
    out = e.generate(PROMPT, max_new_tokens=4, eos_token_id=None, method="speculative")
    assert torch.equal(out, ee.generate(PROMPT, max_new_tokens=4, eos_token_id=None, method="full"))


def test_unknown_config_fields(tiny, tmp_path):
    make_predictors(tiny, k=4).save(tmp_path)
    msg = refused(lambda: SpecEE.from_pretrained(tiny, predictors=tmp_path, draft=None, bogus=1, trheshold=0.5),
                  "SpecEE.from_pretrained got unknown options 'bogus', 'trheshold'; accepted: ")
    assert "predictors" in msg and "threshold" in msg and "linear_kernel" in msg
    ok = SpecEE.from_pretrained(tiny, predictors=tmp_path, draft=None, threshold=0.5, linear_kernel="torch")
    assert ok.config.threshold == 0.5


def test_from_pretrained_checks_the_config_before_loading(tiny, tmp_path):
    # the predictors directory does not exist: the bad k is reported first
    refused(lambda: SpecEE.from_pretrained(tiny, predictors=tmp_path / "missing", draft=None, k="4"),
            "k must be between 1 and the vocabulary size 256")


# ---- SpecEE(...) constructor -------------------------------------------------------------------

@pytest.mark.parametrize("args, match", [
    (lambda t: (make_predictors(t), None, {"k": 4}),
     r"config must be a SpecEEConfig or None, got dict; pass SpecEEConfig\(\*\*options\), or use SpecEE.from_pretrained"),
    (lambda t: (make_predictors(t), None, {}), "config must be a SpecEEConfig or None, got dict"),
    (lambda t: (None, None), "predictors must be a LayerPredictors .*got NoneType None; or use SpecEE.from_pretrained"),
    (lambda t: ("/tmp/preds", None), r"predictors must be a LayerPredictors \(LayerPredictors.load\(directory\)\), got str"),
    (lambda t: (torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), None),
     r"predictors must be a LayerPredictors .*got Sequential Sequential\( \(0\): Linear"),   # repr folded to one line
    (lambda t: (make_predictors(t), "head"), r"draft must be a Draft \(HeadDraft, AssistantDraft\) or None, got str"),
    (lambda t: (make_predictors(t), t), r"got LlamaForCausalLM; for an assistant model use AssistantDraft"),
])
def test_bad_constructor_arguments(tiny, args, match):
    refused(lambda: SpecEE(tiny, *args(tiny)), match)


def test_tree_widths_helper_is_strict():
    from foretell.specee.tree import check_tree_widths

    assert check_tree_widths([3, np.int64(1)], 2) == (3, 1) and check_tree_widths((), 1) == ()
    for bad in ("21", (1.5,), (True,), None, 3):
        with pytest.raises(ForetellError, match="tree must be a sequence of side-leaf counts"):
            check_tree_widths(bad, 3)
