import json

import numpy as np

from foretell.cli import main
from foretell.nifa.attack import PoisonedGraph

from nifa_files import write_pygdebias

KEYS = {"acc", "acc_std", "sp", "sp_std", "eo", "eo_std", "eo_tpr"}


def test_cli_run_writes_issue_schema_and_poisoned_graph(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 40
    rows = [f"{i % 2},{'Male' if (i // 2) % 2 else 'Female'},{rng.integers(0, 3)},{rng.integers(0, 3) + i % 2}"
            for i in range(n)]
    edges = [f"{i} {(i + k) % n}" for i in range(n) for k in (1, 2, 5)]
    write_pygdebias(tmp_path, rows=rows, edges=edges)
    out, pois = tmp_path / "r.json", tmp_path / "p.pt"
    rc = main(["nifa", "run", "--format", "pygdebias", "--data-dir", str(tmp_path), "--name", "toy",
               "--label-column", "label", "--sensitive-column", "sex", "--quick", "--seeds", "0,1",
               "--victims", "gcn,fairgnn", "--num-injected", "2", "--edges-per-injected", "3",
               "--max-epochs", "15", "--uncertainty-lr", "0.01", "--json", str(out), "--save-poisoned", str(pois)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert {"dataset", "num_nodes", "num_edges", "num_injected", "edges_per_injected", "seeds",
            "attack_seconds", "victims", "baselines"} <= set(rep)
    assert rep["num_nodes"] == 40 and rep["num_edges"] == 120 and rep["num_injected"] == 2
    assert rep["seeds"] == [0, 1] and rep["complete"] is True
    assert rep["config"]["nifa"]["uncertainty_lr"] == 0.01
    hist = rep["per_seed"][0]["attack_info"]["feature_history"]
    assert hist and {"ce", "sp", "eo", "cf", "train_sp_signed"} <= set(hist[0])
    assert set(rep["victims"]) == {"gcn", "fairgnn"}
    for res in rep["victims"].values():
        assert KEYS <= set(res["clean"]) and KEYS <= set(res["attacked"])
        assert 0 <= res["clean"]["acc"] <= 100
    assert set(rep["baselines"]) == {"random", "fagnn"} and KEYS <= set(rep["baselines"]["fagnn"]["gcn"]["attacked"])
    g = PoisonedGraph.load(pois)
    assert g.data.num_nodes == 42 and g.injected_index.tolist() == [40, 41]
    assert "NIFA on toy" in capsys.readouterr().out
