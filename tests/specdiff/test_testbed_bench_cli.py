"""`foretell specdiff bench`: --quick writes the report schema; bad inputs exit 2 with one line."""

import json

import pytest
import torch

from foretell.cli import main
from foretell.specdiff.testbed.models import DigitsDiT, sd3_digits_config

KEYS = {"seconds", "speedup", "macs_fraction", "psnr", "ssim", "class_acc", "frechet"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    return DigitsDiT(sd3_digits_config(heads=2, head_dim=16, layers=2)).save(tmp_path_factory.mktemp("m") / "tiny")


def test_quick_bench_writes_schema(tiny_dir, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["specdiff", "bench", "--model", str(tiny_dir), "--quick", "--steps", "5", "--samples", "2", "--cache-rate", "0.5",
               "--methods", "full,specdiff,taylorseer,first_block_cache", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"model", "steps", "samples", "methods"} <= set(report)
    assert report["steps"] == 5 and report["samples"] == 2
    assert report["config"]["device"] == "cpu"
    assert set(report["methods"]) >= {"full", "specdiff", "taylorseer"}
    for name, m in report["methods"].items():
        assert KEYS <= set(m), name
        assert 0.0 <= m["class_acc"] <= 1.0
        assert m["seconds"] > 0
    full = report["methods"]["full"]
    assert full["psnr"] is None and full["ssim"] == pytest.approx(1.0) and full["macs_fraction"] == 1.0
    # diffusers' FirstBlockCache cannot run on SD3 (its last block returns no encoder states): reported, not dropped
    assert "first_block_cache" in report["skipped"]
    assert (tmp_path / "bench.png").stat().st_size > 0


@pytest.mark.parametrize("argv, needle", [
    (["--model", "sdxl-digits"], "unknown model"),
    (["--model", "sd3-digits", "--steps", "0"], "argument --steps: 0 is below 1"),
    (["--model", "sd3-digits", "--methods", "full,teacache"], "unknown method"),
    (["--model", "sd3-digits", "--cache-rate", "1.0"], "--cache-rate must be in [0, 1)"),
    (["--seed", "99999999999999999999999"], "argument --seed: 99999999999999999999999 is outside [0, 4294967295]"),
    (["--threads", "100000"], "argument --threads: 100000 is outside [0, 256]"),
    (["--quick", "--repeats", "0"], "argument --repeats: 0 is below 1"),          # --quick must not hide it
    (["--quick", "--speculative-steps", "50"], "--speculative-steps 50 exceeds the 6 sampling steps of --quick"),
    (["--quick", "--plot", "PLOT/p.txt"], ".txt is not an image format matplotlib writes; accepted: "),
    (["--quick", "--plot", "PLOT/y.json"], ".json is not an image format"),
    (["--quick", "--plot", "PLOT/x.png", "--json", "PLOT/x_samples.png"], "--json and --plot's sample grid would both write"),
    (["--quick", "--plot", "PLOT/x.json"], "--json and --plot would both write"),
])
def test_bad_inputs_exit_2(argv, needle, capsys, tmp_path):
    argv = [a.replace("PLOT", str(tmp_path)) for a in argv]
    try:
        rc = main(["specdiff", "bench", *argv] + ([] if "--json" in argv else ["--json", str(tmp_path / "x.json")]))
    except SystemExit as exc:                                     # argparse's own one-line error
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())                           # checked before any work: nothing written


def test_damaged_model_folder_is_one_line(tiny_dir, tmp_path, capsys):
    import shutil

    cases = {"config.json": ("{not json", "config.json is not valid JSON"),
             "model.safetensors": (b"\x00" * 64, "model.safetensors is not a readable safetensors file")}
    for name, (content, needle) in cases.items():
        d = tmp_path / name.split(".")[0]
        shutil.copytree(tiny_dir, d)
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        rc = main(["specdiff", "bench", "--model", str(d), "--quick", "--json", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    other = DigitsDiT(sd3_digits_config(heads=2, head_dim=16, layers=3)).save(tmp_path / "other")
    shutil.copy(other / "model.safetensors", tmp_path / "config" / "model.safetensors")
    shutil.copy(tiny_dir / "config.json", tmp_path / "config" / "config.json")
    rc = main(["specdiff", "bench", "--model", str(tmp_path / "config"), "--quick", "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "model.safetensors does not match config.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_device_flag_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["specdiff", "bench", "--help"])
    assert "--device" in capsys.readouterr().out


@pytest.mark.parametrize("device, needle", [("bogus", "unknown device 'bogus'"), ("cuda:7", "cuda:7")])
def test_bad_or_missing_device_exits_2_before_writing(device, needle, capsys, tmp_path):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPU")
    out = tmp_path / "x.json"
    rc = main(["specdiff", "bench", "--model", "sd3-digits", "--quick", "--device", device, "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_one_line(capsys, tmp_path):
    rc = main(["specdiff", "bench", "--model", "sd3-digits", "--quick", "--device", "cuda",
               "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
