"""Bad input to `foretell specee ...`: one line on stderr, exit status 2, nothing written, and
(where the input alone shows it is bad) no model loaded first. Plus the resumable predictor-data
collection, which must never reuse a shard made from other prompts, lengths or models."""

import json
from types import SimpleNamespace

import pytest
import torch

from tiny_models import make_predictors
from foretell.cli import main
from foretell.core.errors import ForetellError


def run_cli(argv) -> int:
    """``main``'s exit status; argparse's usage errors exit through SystemExit."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def assert_one_line_error(capsys, message: str) -> str:
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "error: " in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert message in err, err
    return err


@pytest.fixture
def no_model(monkeypatch):
    """Any model load (or bench run) fails the test: these errors must come first."""
    import foretell.specee.bench as bench
    import foretell.specee.loading as loading
    from foretell.specee.engine import SpecEE

    def reached(*a, **k):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(loading, "load_model", reached)
    monkeypatch.setattr(bench, "run_bench", reached)
    monkeypatch.setattr(SpecEE, "from_pretrained", reached)


@pytest.fixture
def tiny_loaded(monkeypatch, tiny):
    """`specee train` gets the tiny random model (vocabulary 256) and no tokenizer."""
    import foretell.specee.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda path=None, dtype=None, device=None: (tiny, None))


def _train(tmp_path, *extra):
    return ["specee", "train", "--quick", "--out", tmp_path / "out", "--json", tmp_path / "t.json", *extra]


BINARY, NUL, EMPTY, BLANK = b"\x80\x81\xfe binary \xff\x00", b"a prompt\x00\x01\x02", b"", b" \n\t\n"


@pytest.mark.parametrize("flag, content, message", [
    *[(flag, BINARY, "is not UTF-8 text") for flag in ("bench --prompts", "train --prompts", "train --draft-prompts")],
    *[(flag, NUL, "holds NUL bytes") for flag in ("bench --prompts", "train --prompts", "train --draft-prompts")],
    *[(flag, content, "has no prompts") for flag in ("train --prompts", "train --draft-prompts")
      for content in (EMPTY, BLANK)],      # (bench read its prompts first already)
])
def test_unreadable_or_empty_prompt_files(flag, content, message, tmp_path, capsys, no_model):
    action, option = flag.split()
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    if action == "bench":
        argv = ["specee", "bench", "--quick", "--json", tmp_path / "r.json", option, prompts]
    else:
        argv = _train(tmp_path, "--data-dir", tmp_path / "data", option, prompts)
    assert run_cli(argv) == 2
    assert_one_line_error(capsys, f"prompts file {prompts} {message}")
    assert list(tmp_path.iterdir()) == [prompts]          # no report, no data folder, no --out


def test_data_dir_that_is_a_file(tmp_path, capsys, no_model):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert run_cli(_train(tmp_path, "--data-dir", afile)) == 2
    assert_one_line_error(capsys, f"--data-dir {afile} is a file")
    assert run_cli(_train(tmp_path, "--data-dir", afile / "sub")) == 2
    assert_one_line_error(capsys, "is a file, so the folder cannot be created")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "draft").write_text("")
    assert run_cli(_train(tmp_path, "--data-dir", tmp_path / "data", "--draft-prompts", afile)) == 2
    assert_one_line_error(capsys, "draft/ folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "data"]


def test_damaged_shard_names_itself(tmp_path, capsys, tiny_loaded):
    data = tmp_path / "data"
    data.mkdir()
    shard = data / "shard_000.pt"
    shard.write_bytes(b"not a torch file\x00\x01\x02")
    assert run_cli(_train(tmp_path, "--data-dir", data, "--draft-vocab", "64")) == 2
    err = assert_one_line_error(capsys, f"collected data shard {shard} cannot be read")
    assert "delete it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] and shard.exists()   # nothing else touched


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "half", "not-items"])
def test_load_shards_refuses_damaged_files(content, tmp_path):
    from foretell.specee.collect import load_draft_shards, load_shards

    good = [{"ids": torch.arange(5, dtype=torch.int32), "prompt_len": 2}]
    for name in ("shard_000.pt", "draft_000.pt"):
        path = tmp_path / name
        if content == "half":
            torch.save(good, path)
            path.write_bytes(path.read_bytes()[:100])
        elif content == "not-items":
            torch.save({"ids": 1}, path)
        else:
            path.write_bytes(content)
    for load, name in ((load_shards, "shard_000.pt"), (load_draft_shards, "draft_000.pt")):
        with pytest.raises(ForetellError, match=f"{name} (cannot be read .*|does not hold collected items); delete it"):
            load(tmp_path)


def test_a_shard_another_run_is_writing_is_not_skipped_silently(tmp_path, capsys, tiny_loaded):
    data = tmp_path / "data"
    data.mkdir()
    (data / "shard_000.tmp").write_bytes(b"")          # another worker's shard in progress (or a crash's)
    assert run_cli(_train(tmp_path, "--data-dir", data, "--draft-vocab", "64")) == 2
    assert_one_line_error(capsys, "shard_000.pt is still being collected")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--k", "5000"], "--k 5000 is larger than --draft-vocab 4096"),
    (["--draft-vocab", "1"], "--k 4 is larger than --draft-vocab 1"),
    (["--k", "4", "--draft-vocab", "2"], "--k 4 is larger than --draft-vocab 2"),
])
def test_k_must_fit_the_draft_vocabulary(flags, message, tmp_path, capsys, no_model):
    assert run_cli(_train(tmp_path, "--data-dir", tmp_path / "data", *flags)) == 2
    assert_one_line_error(capsys, message)
    assert list(tmp_path.iterdir()) == []


def test_draft_vocabulary_must_fit_the_model(tmp_path, capsys, tiny_loaded):
    assert run_cli(_train(tmp_path, "--data-dir", tmp_path / "data", "--draft-vocab", "300")) == 2
    assert_one_line_error(capsys, "--draft-vocab 300 is larger than the model's vocabulary of 256 tokens; pass 1..256")
    assert list(tmp_path.iterdir()) == []                # checked before collecting anything


@pytest.mark.parametrize("name", ["calibration.json", "predictors.json", "draft_head.safetensors"])
def test_train_json_must_not_overwrite_an_asset_file(name, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    argv = ["specee", "train", "--quick", "--out", out, "--json", out / name, "--data-dir", tmp_path / "data"]
    assert run_cli(argv) == 2
    assert_one_line_error(capsys, f"--json {out / name} is one of the asset files written to --out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["r.md", "r.MD"])
def test_bench_json_path_must_not_be_its_markdown_path(name, tmp_path, capsys, no_model):
    assert run_cli(["specee", "bench", "--quick", "--json", tmp_path / name]) == 2
    assert_one_line_error(capsys, "--json and its Markdown copy (--json's name ending in .md) would both write")
    assert list(tmp_path.iterdir()) == []


def test_bench_markdown_path_must_be_writable(tmp_path, capsys, no_model):
    (tmp_path / "r.md").mkdir()
    assert run_cli(["specee", "bench", "--quick", "--json", tmp_path / "r.json"]) == 2
    assert_one_line_error(capsys, f"{tmp_path / 'r.md'} is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]


@pytest.mark.parametrize("argv, message", [
    (["bench", "--ppl-texts", "-5"], "--ppl-texts: -5 is below 0"),
    (["train", "--quick", "--out", "{tmp}/o", "--predictor-epochs", "-5"], "--predictor-epochs: -5 is below 1"),
    (["train", "--quick", "--out", "{tmp}/o", "--draft-epochs", "0"], "--draft-epochs: 0 is below 1"),
    (["train", "--out", "{tmp}/o", "--seed", "-1"], "--seed: -1 is outside [0, 4294967295]"),
    (["bench", "--seed", str(2**32)], "--seed: 4294967296 is outside"),
    (["generate", "hi", "--seed", "-3"], "--seed: -3 is outside"),
    (["bench", "--threads", "257"], "--threads: 257 is outside [1, 256]"),
    (["train", "--out", "{tmp}/o", "--threads", "100000"], "--threads: 100000 is outside [1, 256]"),
    (["bench", "--gamma", "0"], "--gamma: 0 is outside [1, 32]"),
    (["generate", "hi", "--gamma", "-2"], "--gamma: -2 is outside"),
    (["generate", "hi", "--threshold", "1.5"], "--threshold: 1.5 is outside [0.0, 1.0]"),
    (["generate", "hi", "--threshold", "-0.1"], "--threshold: -0.1 is outside"),
    (["generate", "hi", "--threshold", "nan"], "--threshold: nan is outside"),
    (["generate", "hi", "--do-sample", "--temperature", "0"], "--temperature: 0.0 is outside (0.0, 100.0]"),
    (["generate", "hi", "--temperature", "-1"], "--temperature: -1.0 is outside"),
    (["generate", "hi", "--top-p", "0"], "--top-p: 0.0 is outside (0.0, 1.0]"),
    (["generate", "hi", "--top-p", "1.5"], "--top-p: 1.5 is outside"),
])
def test_numeric_flags_have_ranges(argv, message, tmp_path, capsys, no_model):
    argv = ["specee", *[a.replace("{tmp}", str(tmp_path)) for a in argv]]
    assert run_cli(argv) == 2
    assert_one_line_error(capsys, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["bench", "generate"])
def test_tree_must_fit_gamma_before_the_model_loads(action, tmp_path, capsys, no_model):
    argv = ["specee", action, *(["hi"] if action == "generate" else ["--json", tmp_path / "r.json"]),
            "--gamma", "1", "--tree", "3,1"]
    assert run_cli(argv) == 2
    assert_one_line_error(capsys, "tree needs at most gamma=1 depths")
    assert list(tmp_path.iterdir()) == []


def test_no_perplexity_is_claimed_over_zero_tokens(tiny):
    from foretell.specee.bench import _perplexities
    from foretell.specee.engine import SpecEE

    ee = SpecEE(tiny, make_predictors(tiny), None)
    ms = SimpleNamespace(calibration={"adainfer_gap": 0.5}, fv=make_predictors(tiny), lazy=None)
    out = _perplexities(ee, ms, [torch.tensor([[5, 6, 7]])], [[9]], fixed=3)     # a 1-token continuation
    for name in ("full", "specee", "adainfer", "full_vocab_predictor", "fixed_layer_3"):
        assert out[name]["tokens"] == 0 and out[name]["perplexity"] is None, name
    assert out["speculative"]["perplexity"] is None and "no perplexity" in out["note"]


class _CharTokenizer:
    """One token per character, no chat template: enough for ``chat_ids``."""

    chat_template = None
    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text, return_tensors=None, add_special_tokens=None):
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) for c in text]]))


def test_predictor_shards_are_kept_only_while_they_hold_the_same_data(tmp_path, monkeypatch):
    """Resumable predictor-data collection: a finished shard is reused only while its sidecar says
    it holds the same prompts, --max-new-tokens and model; a shard from before the sidecars is kept
    only when its content is exactly that collection (then stamped)."""
    from foretell.specee import collect

    calls = []

    def fake_many(acc, prompts, max_new_tokens, eos_token_id=None, pad_token_id=0):
        items = []
        for p in prompts:
            calls.append("".join(map(chr, p.tolist())))
            gen = torch.arange(1, max_new_tokens + 1)
            items.append({"ids": torch.cat([p, gen]).int(), "prompt_len": p.numel(),
                          "layer_h": torch.zeros(acc.num_layers, max_new_tokens, acc.hidden_size).half()})
        return items, 0

    monkeypatch.setattr(collect, "collect_many", fake_many)

    def run(prompts, n_new=4, model="m1"):
        calls.clear()
        acc = SimpleNamespace(num_layers=2, hidden_size=3, model_id=model)
        paths = collect.collect(acc, _CharTokenizer(), prompts, tmp_path, max_new_tokens=n_new, shard_size=3)
        assert [p.name for p in paths] == [f"shard_{i:03d}.pt" for i in range(-(-len(prompts) // 3))]
        items = collect.load_shards(tmp_path)[: len(prompts)]
        assert ["".join(map(chr, it["ids"][: it["prompt_len"]].tolist())) for it in items] == prompts
        assert all(it["ids"].numel() - it["prompt_len"] == n_new for it in items)
        return list(calls)

    first = [f"p{i}" for i in range(5)]
    assert run(first) == first                         # shards 0 (3 prompts) and 1 (2 prompts)
    assert run(first) == []                            # all kept
    assert run(first, n_new=6) == first                # another --max-new-tokens: all collected again
    changed = ["q0"] + first[1:]
    assert run(changed, n_new=6) == ["q0", "p1", "p2"]  # shard 0's prompts changed
    grown = changed + ["p5"]
    assert run(grown, n_new=6) == ["p3", "p4", "p5"]   # shard 1 held 2 prompts, now 3
    assert run(grown, n_new=6, model="m2") == grown     # another model
    side = tmp_path / "shard_000.json"
    assert json.loads(side.read_text())["model"] == "m2"
    side.unlink()                                      # a shard from before the sidecars ...
    assert run(grown, n_new=6, model="m2") == [] and side.exists()   # ... that holds this data: kept, stamped
    side.unlink()
    assert run(grown, n_new=8, model="m2") == ["q0", "p1", "p2", "p3", "p4", "p5"]  # unstamped 0 too short
    side.unlink()
    assert run(["r0"] + grown[1:], n_new=8, model="m2") == ["r0", "p1", "p2"]      # unstamped 0: other prompts
    side.write_text("{half")                           # a damaged sidecar matches nothing
    assert run(["r0"] + grown[1:], n_new=8, model="m2") == ["r0", "p1", "p2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard_000.json", "shard_000.pt",
                                                          "shard_001.json", "shard_001.pt"]
