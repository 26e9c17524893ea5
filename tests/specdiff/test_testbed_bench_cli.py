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
    (["--model", "sd3-digits", "--steps", "0"], "--steps must be >= 1"),
    (["--model", "sd3-digits", "--methods", "full,teacache"], "unknown method"),
    (["--model", "sd3-digits", "--cache-rate", "1.0"], "--cache-rate must be in [0, 1)"),
])
def test_bad_inputs_exit_2(argv, needle, capsys, tmp_path):
    rc = main(["specdiff", "bench", *argv, "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err


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
