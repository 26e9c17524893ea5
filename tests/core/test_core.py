import json

import pytest

from foretell.cli import main
from foretell.core import ForetellError, count_macs, seed_everything, shared_dir, time_callable
from foretell.core.report import markdown_table, write_json


def test_write_json_is_atomic_and_strict(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.5, 2]})
    data = json.loads(path.read_text())
    assert data["a"] is None and data["b"] == [1.5, 2]
    assert "versions" in data["environment"] and data["environment"]["cpu_count"] >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_failure_leaves_nothing(tmp_path):
    class Bad:
        pass

    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"x": Bad()})
    assert list(tmp_path.iterdir()) == []


def test_timing_median_and_result():
    calls = []
    t = time_callable(lambda: calls.append(1) or len(calls), warmup=2, repeats=3)
    assert len(calls) == 5 and t.result == 5 and len(t.seconds) == 3
    assert min(t.seconds) <= t.median <= max(t.seconds)


def test_count_macs_of_matmul():
    import torch

    a, b = torch.randn(4, 8), torch.randn(8, 16)
    macs, out = count_macs(lambda: a @ b)
    assert macs == 4 * 8 * 16 and out.shape == (4, 16)


def test_seed_everything_reproducible():
    import torch

    seed_everything(3)
    x = torch.rand(3)
    seed_everything(3)
    assert torch.equal(x, torch.rand(3))
    with pytest.raises(ForetellError):
        seed_everything(-1)


def test_shared_dir_missing_is_clear(tmp_path):
    with pytest.raises(ForetellError, match="does not exist"):
        shared_dir(tmp_path / "nope")
    assert shared_dir(tmp_path) == tmp_path


def test_markdown_table():
    text = markdown_table(["a", "b"], [[1, 0.5], [None, float("nan")]], digits=1)
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5 |", "| - | - |"]


def test_cli_help_lists_systems(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("demo", "specdiff", "specprune", "specee", "nifa"):
        assert name in out


def test_cli_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized arguments" in err


def test_demo_rejects_unknown_system(capsys, tmp_path):
    assert main(["demo", "--systems", "nope", "--out", str(tmp_path / "demo")]) == 2
    assert "accepted" in capsys.readouterr().err and not (tmp_path / "demo").exists()


def test_demo_rejects_bad_device_before_running_anything(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--device", "bogus", "--out", str(out)]) == 2
    assert "unknown device 'bogus'" in capsys.readouterr().err
    assert not out.exists()                      # nothing ran, nothing half-written


def test_count_macs_sees_sdpa():
    import torch
    import torch.nn.functional as F

    q = k = v = torch.randn(1, 2, 16, 8)
    macs, _ = count_macs(lambda: F.scaled_dot_product_attention(q, k, v))
    assert macs == 2 * 2 * 16 * 16 * 8  # QK^T and PV, per head


def test_resolve_device_accepts_cpu_and_rejects_bad_or_missing_devices():
    import pytest
    import torch

    from foretell.core.device import resolve_device
    from foretell.core.errors import ForetellError

    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ForetellError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ForetellError, match="must be a string"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ForetellError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_time_interleaved_rotates_cells_and_keeps_one_time_per_round():
    from foretell.core.timing import time_interleaved

    calls = []
    times, load = time_interleaved(["a", "b", "c"], lambda c: calls.append(c), repeats=4, warmup_rounds=1)
    assert calls[:3] == ["a", "b", "c"]                                  # warm-up round
    timed = calls[3:]
    assert [timed[i * 3] for i in range(4)] == ["a", "b", "c", "a"]      # each round starts one cell later
    assert sorted(timed) == sorted(["a", "b", "c"] * 4)
    assert {c: len(t) for c, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(s >= 0 for t in times.values() for s in t) and len(load) == 2


def test_run_script_turns_a_user_error_into_one_line(capsys, monkeypatch):
    from foretell.core.errors import ForetellError, run_script

    def bad(argv):
        raise ForetellError("--seed 0 holds the evaluation layouts")

    monkeypatch.delenv("FORETELL_DEBUG", raising=False)
    assert run_script(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --seed 0 holds" in err
    assert run_script(lambda argv: None) == 0 and run_script(lambda argv: 3) == 3
    monkeypatch.setenv("FORETELL_DEBUG", "1")
    with pytest.raises(ForetellError):
        run_script(bad)


def test_output_paths_are_checked_before_any_work(tmp_path):
    import os

    from foretell.core.errors import ForetellError
    from foretell.core.report import check_output_path, write_json

    check_output_path(tmp_path / "new" / "deeper" / "r.json", "--json")  # folders that would be created
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    (tmp_path / "afile").write_text("x")
    for path, flag, message, directory in [("", "--json", "is empty", False),
                                           (tmp_path, "--json", "is a directory", False),
                                           (tmp_path / "afile", "--out", "is a file", True),
                                           (tmp_path / "afile" / "r.json", "--json", "is a file, so the folder", False)]:
        with pytest.raises(ForetellError, match=message):
            check_output_path(path, flag, directory=directory)
    written = write_json(tmp_path / "r.json", {"a": 1}, add_environment=False)
    mask = os.umask(0)
    os.umask(mask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize("argv, message", [
    (["specee", "generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens: 0 is below 1"),
    (["specee", "bench", "--threads", "x"], "'x' is not an integer"),
    (["specdiff", "bench", "--guidance-scale", "nan"], "nan is outside"),
    (["nifa", "run", "--dataset", "german", "--patience", "-1"], "--patience: -1 is below 1"),
    (["demo", "--seed", "-1"], "--seed: -1 is outside [0, 4294967295]"),
])
def test_range_checked_flags_are_one_line_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["nifa", "attack", "--dataset", "german", "--seeds", "3,4", "--save-poisoned", "{tmp}/p.pt"], "takes one seed"),
    (["nifa", "run", "--dataset", "german", "--victims", "gcn,gcn", "--json", "{tmp}/r.json"], "name one twice"),
    (["nifa", "run", "--dataset", "german", "--min-epochs", "9", "--max-epochs", "5", "--json", "{tmp}/r.json"],
     "is above --max-epochs"),
    (["demo", "--shared-dir", "{tmp}/nope", "--out", "{tmp}/demo"], "is not a directory"),
])
def test_impossible_requests_stop_before_any_work(argv, message, capsys, tmp_path):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_argtypes_accept_what_they_say_and_name_what_is_accepted(tmp_path):
    import argparse

    from foretell.core.argtypes import existing_dir, float_in, int_at_least, int_list

    assert int_at_least(1)("3") == 3 and int_list(0)("0, 2,5") == [0, 2, 5] and float_in(0, 1)("1") == 1.0
    assert existing_dir(str(tmp_path)) == str(tmp_path)
    for parse, text, message in [(int_at_least(1), "0", "accepted: integers >= 1"), (int_list(1), ",", "lists no integers"),
                                 (int_list(1), "2,x", "'x' is not an integer"), (float_in(0, 1, low_open=True), "0", "(0, 1]"),
                                 (float_in(0, 1), "inf", "outside"), (existing_dir, str(tmp_path / "no"), "not an existing folder")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace("]", r"\]")):
            parse(text)


@pytest.mark.parametrize("argv, message", [
    (["specee", "generate", "hi", "--model", "{tmp}"], "is not a transformers model directory"),
    (["specdiff", "bench", "--methods", ",", "--json", "{tmp}/b.json"], "lists no method"),
    (["demo", "--systems", "nifa,nifa", "--out", "{tmp}/demo"], "names a system twice"),
])
def test_more_bad_requests_are_one_line(argv, message, capsys, tmp_path):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_check_distinct_outputs_names_both_outputs(tmp_path):
    from foretell.core.report import check_distinct_outputs

    check_distinct_outputs({"--json": tmp_path / "a.json", "--md": tmp_path / "a.md", "--plot": None})
    with pytest.raises(ForetellError, match=r"^--json and --md would both write .*a\.json; give them different"):
        check_distinct_outputs({"--json": tmp_path / "a.json", "--plot": None, "--md": tmp_path / "x" / ".." / "a.json"})
    with pytest.raises(ForetellError, match="--json and its Markdown copy would both write"):
        check_distinct_outputs({"--json": tmp_path / "r.MD", "its Markdown copy": tmp_path / "r.md"})


def test_in_interval_ends_and_non_finite():
    import math

    from foretell.core.checks import in_interval

    assert in_interval(0, 0, 1) and in_interval(1, 0, 1) and in_interval(7, 0, math.inf)
    assert not in_interval(0, 0, 1, low_open=True) and not in_interval(1, 0, 1, high_open=True)
    assert not in_interval(-0.1, 0, 1) and not in_interval(1.1, 0, 1)
    assert not in_interval(math.nan, -math.inf, math.inf) and not in_interval(math.inf, 0, math.inf)
