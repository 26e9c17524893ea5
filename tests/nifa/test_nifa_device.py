"""What the CPU can check of NIFA's device handling (the GPU runs are benchmarks/gpu/check_nifa.py):
the --device flag and its one-line errors, the device recorded in the reports, and the GPU product
(DeviceConstSpMM) against the dense one on CPU tensors."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from foretell.cli import main
from foretell.core.errors import ForetellError
from foretell.nifa.attack import NIFA, NIFAConfig, PoisonedGraph
from foretell.nifa.blocks import DeviceConstSpMM
from foretell.nifa.evaluate import EvalConfig, build_report, merge_reports
from foretell.nifa.graph import to_torch

from nifa_files import write_pygdebias
from test_attack_steps import toy_graph
from test_report import seed_result


@pytest.mark.parametrize("action", ["run", "attack"])
def test_device_flag_in_help(action, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nifa", action, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--device" in out and "cuda:N" in out


def _toy_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    rows = [f"{i % 2},{'Male' if (i // 2) % 2 else 'Female'},{rng.integers(0, 3)},{rng.integers(0, 3)}"
            for i in range(n)]
    edges = [f"{i} {(i + k) % n}" for i in range(n) for k in (1, 2, 5)]
    return write_pygdebias(tmp_path, rows=rows, edges=edges)


def _data_args(tmp_path):
    return ["--format", "pygdebias", "--data-dir", str(tmp_path), "--name", "toy", "--label-column", "label",
            "--sensitive-column", "sex"]


BAD_DEVICES = ["bogus", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])


@pytest.mark.parametrize("device", BAD_DEVICES)
@pytest.mark.parametrize("action", ["run", "attack"])
def test_bad_device_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, action, device):
    _toy_files(tmp_path)
    out, pois = tmp_path / "r.json", tmp_path / "p.pt"
    rc = main(["nifa", action, *_data_args(tmp_path), "--device", device, "--quick", "--num-injected", "2",
               "--edges-per-injected", "2", "--json", str(out), "--save-poisoned", str(pois)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("foretell: error:") and repr(device) in err
    assert "Traceback" not in err
    assert not out.exists() and not pois.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.csv", "toy_edges.txt"]


def test_reports_record_the_device(tmp_path, capsys):
    _toy_files(tmp_path)
    out, info = tmp_path / "r.json", tmp_path / "a.json"
    rc = main(["nifa", "run", *_data_args(tmp_path), "--device", "cpu", "--quick", "--victims", "gcn",
               "--baselines", "none", "--num-injected", "2", "--edges-per-injected", "2", "--max-epochs", "5",
               "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads(out.read_text())["config"]
    assert cfg["device"] == "cpu" and cfg["nifa"]["device"] == "cpu"
    rc = main(["nifa", "attack", *_data_args(tmp_path), "--quick", "--num-injected", "2",
               "--edges-per-injected", "2", "--save-poisoned", str(tmp_path / "p.pt"), "--json", str(info)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(info.read_text())
    assert rep["device"] == "cpu" and rep["config"]["device"] == "cpu"


def test_eval_config_device_is_recorded_and_merged():
    data = toy_graph()
    data.split_seed = 0
    cfg = EvalConfig(seeds=(0,), victims=("gcn",), baselines=())
    assert build_report("toy", data, cfg, [seed_result(0, 0.2)])["config"]["device"] == "cpu"
    cfg.device = "cuda"          # as written by a GPU run; merging it needs no GPU
    rep = build_report("toy", data, cfg, [seed_result(0, 0.2)])
    assert rep["config"]["device"] == "cuda"
    cfg.seeds = (1,)
    other = build_report("toy", data, cfg, [seed_result(1, 0.4)])
    assert merge_reports([rep, other])["config"]["device"] == "cuda"


def test_nifa_config_checks_the_device():
    assert NIFA(NIFAConfig(device=torch.device("cpu"))).config.device == "cpu"
    with pytest.raises(ForetellError, match="unknown device"):
        NIFA(NIFAConfig(device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ForetellError, match="no CUDA GPU"):
            NIFA(NIFAConfig(device="cuda"))


def test_attack_with_config_device_leaves_the_input_and_records_the_device(tmp_path):
    data = toy_graph()
    before = {k: v.clone() for k, v in data.to_dict().items() if isinstance(v, torch.Tensor)}
    cfg = dict(num_injected=2, edges_per_injected=2, uncertainty_epochs=3, max_iter=1, max_step=2)
    pg = NIFA(NIFAConfig(device="cpu", **cfg)).attack(data)
    ref = NIFA(NIFAConfig(**cfg)).attack(data)
    assert pg.info["device"] == "cpu" and pg.data.x.device.type == "cpu"
    assert torch.equal(pg.data.x, ref.data.x) and torch.equal(pg.data.edge_index, ref.data.edge_index)
    for k, v in before.items():
        assert torch.equal(data[k], v)
    back = PoisonedGraph.load(pg.save(tmp_path / "p.pt"))
    assert torch.equal(back.data.x, pg.data.x) and back.injected_index.tolist() == pg.injected_index.tolist()


def test_device_sparse_product_matches_dense():
    """The GPU path's constant product (torch CSR + precomputed transpose), run on CPU tensors."""
    m = sp.random(40, 25, density=0.15, format="csr", dtype=np.float32, random_state=1)
    a, at = to_torch(m), to_torch(m.T.tocsr())
    dense = torch.from_numpy(m.toarray())
    w = torch.rand(7, 25, requires_grad=True)      # used transposed: a non-contiguous right-hand side
    out = DeviceConstSpMM.apply(a, at, w.t())
    out.square().sum().backward()
    w_ref = w.detach().clone().requires_grad_(True)
    ref = dense @ w_ref.t()
    ref.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(w.grad, w_ref.grad, atol=1e-4)
