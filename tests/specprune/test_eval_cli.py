"""``foretell specprune eval``: report schema, closed-loop runner, and clear errors on bad input."""

import json

import numpy as np
import pytest

from foretell.cli import main
from foretell.specprune.methods import METHOD_NAMES, build_method
from foretell.specprune.model import OFTStyleVLA, VLAConfig
from foretell.specprune.sim import sample_layout
from foretell.specprune.train import TOKENIZER_NAME, make_tokenizer

KEYS = {"success_rate", "llm_latency_ms", "e2e_latency_ms", "visual_tokens_kept", "llm_macs_fraction"}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny random-init VLA with the testbed's token layout, saved like the shipped weights."""
    import torch

    torch.manual_seed(0)
    tok = make_tokenizer()
    cfg = VLAConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=6, num_heads=2, num_kv_heads=1,
                    intermediate_size=64, vocab_size=tok.vocab_size, proprio_dim=8, action_dim=7, chunk=8,
                    vision_dim=16, action_head_hidden=32)
    d = tmp_path_factory.mktemp("tiny_vla")
    OFTStyleVLA(cfg).save_pretrained(d)
    tok.save(d / TOKENIZER_NAME)
    return d


def test_quick_eval_writes_the_schema(tiny_weights, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["specprune", "eval", "--quick", "--weights", str(tiny_weights), "--json", str(out), "--seed", "3"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["episodes"] == 2 and rep["seed"] == 3
    assert rep["config"]["eval"]["device"] == "cpu"
    assert set(rep["methods"]) == set(METHOD_NAMES)
    for name, r in rep["methods"].items():
        assert KEYS <= set(r), name
        assert 0.0 <= r["success_rate"] <= 1.0 and r["episodes"] == 2
        assert r["llm_latency_ms"] > 0 and r["e2e_latency_ms"] >= r["llm_latency_ms"]
    assert rep["methods"]["full"]["llm_macs_fraction"] == pytest.approx(1.0)
    assert rep["methods"]["full"]["visual_tokens_kept"] == 2 * (32 // 8) ** 2
    for peer in ("fastv", "random"):   # peers run at specprune's calibrated budget
        assert rep["methods"][peer]["visual_tokens_kept"] == pytest.approx(rep["token_budget"])
    assert {"blind", "random_actions", "expert"} <= set(rep["baselines"])
    assert rep["baselines"]["expert"]["success_rate"] <= 1.0
    assert (tmp_path / "eval.md").is_file()
    paired = rep["paired_vs_specprune"]  # layouts solved by specprune only / by the other method only
    assert set(paired) == set(METHOD_NAMES) - {"specprune"}
    for name, p in paired.items():
        mine, other = rep["methods"]["specprune"]["successes"], rep["methods"][name]["successes"]
        assert p["reference_only"] - p["method_only"] == mine - other


def test_operating_points_keep_more_tokens_in_fine_mode():
    from foretell.specprune.eval import OPERATING_POINTS, testbed_specprune_config

    for name in OPERATING_POINTS:
        cfg = testbed_specprune_config(name)
        assert cfg.static_cap_fine < cfg.static_cap_coarse  # fine mode prunes fewer unchanged patches ...
        assert all(f > c for f, c in zip(cfg.topk_fine, cfg.topk_coarse))  # ... and keeps a larger top-k
    tight = testbed_specprune_config("tight")
    assert tight.static_cap_coarse > testbed_specprune_config("paper").static_cap_coarse
    assert testbed_specprune_config('{"token_budget": 80}').token_budget == 80


def test_full_handle_reproduces_the_unpruned_closed_loop_episode(tiny_weights):
    from foretell.specprune.eval import EpisodeRunner
    from foretell.specprune.train import load_policy

    vla, tok = load_policy(tiny_weights)
    runner = EpisodeRunner(vla, tok, image_size=32, horizon=12)
    layout = sample_layout(0, 1)
    plain = runner.run(layout)
    end_plain = runner.env.state.gripper_xyz.copy()
    h = build_method("full", vla)
    h.remove()
    handled = runner.run(layout, h)
    np.testing.assert_allclose(runner.env.state.gripper_xyz, end_plain, atol=1e-5)
    assert handled["queries"] == plain["queries"] and handled["steps"] == plain["steps"] == 12
    assert h.stats()["queries"] == handled["queries"]


def test_opt_in_fastv_layer0_runs_at_the_peer_budget(tiny_weights, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["specprune", "eval", "--quick", "--weights", str(tiny_weights), "--json", str(out),
               "--methods", "full,fastv_layer0", "--no-baselines"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert set(rep["methods"]) == {"full", "fastv_layer0"}
    assert rep["methods"]["fastv_layer0"]["visual_tokens_kept"] == pytest.approx(rep["token_budget"])


@pytest.mark.parametrize("argv, message", [
    (["--episodes", "0"], "argument --episodes: 0 is below 1"),
    (["--seed", "99999999999999999999"], "argument --seed: 99999999999999999999 is outside [0, 4294967295]"),
    (["--threads", "100000"], "argument --threads: 100000 is outside [1, 256]"),
    (["--methods", ","], "--methods ',' lists no method"),
    (["--methods", "full", "--specprune-config", '{"token_budget": 80}'], "--methods full has neither"),
    (["--md", "TMP/x.json"], "--json and --md would both write"),
    (["--methods", "full,fastvv"], "unknown method"),
    (["--weights", "/nonexistent/weights"], "weights directory"),
    (["--specprune-config", "fastest"], "unknown operating point"),
    (["--specprune-config", '{"bogus": 1}'], "unknown SpecPruneConfig field"),
    (["--specprune-config", '{"use_global": "false"}'], "use_global='false' must be true or false"),
    (["--specprune-config", '{"token_budget": 1.5}'], "token_budget=1.5 must be an integer or null"),
    (["--md", "/proc/x.md"], "--md /proc/x.md: cannot write in /proc"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--device", "cuda:9"], "cuda:9"),
    (["--cuda-graphs"], "--cuda-graphs needs --device cuda"),
])
def test_bad_inputs_exit_2_with_one_line(argv, message, tmp_path, capsys):
    import torch

    if "cuda:9" in argv and torch.cuda.device_count() > 9:
        pytest.skip("this machine has a tenth GPU")
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    try:
        rc = main(["specprune", "eval", "--quick", "--json", str(tmp_path / "x.json"), *argv])
    except SystemExit as exc:                                     # argparse's own one-line error
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def test_json_named_like_its_markdown_is_refused(tmp_path, capsys):
    rc = main(["specprune", "eval", "--quick", "--json", str(tmp_path / "x.md")])
    err = capsys.readouterr().err
    assert rc == 2 and "--json and the Markdown table (--json's name ending in .md) would both write" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_damaged_weights_folder_is_one_line(tiny_weights, tmp_path, capsys):
    import shutil

    for name, content, needle in (("config.json", b"{not json", "config.json is not valid JSON"),
                                  ("model.safetensors", b"\x00" * 64, "model.safetensors is not a readable safetensors file")):
        d = tmp_path / name.split(".")[0]
        shutil.copytree(tiny_weights, d)
        (d / name).write_bytes(content)
        rc = main(["specprune", "eval", "--quick", "--weights", str(d), "--json", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.json").exists()


def test_device_flag_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["specprune", "eval", "--help"])
    assert "--device" in capsys.readouterr().out


def test_cuda_without_gpu_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message on a machine without a GPU")
    rc = main(["specprune", "eval", "--quick", "--device", "cuda", "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA GPU" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())
