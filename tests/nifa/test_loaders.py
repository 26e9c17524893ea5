import numpy as np
import pytest
import torch

from foretell.cli import main
from foretell.core.errors import ForetellError
from foretell.nifa.loaders import load_dblp, load_fairgnn, load_pygdebias
from foretell.nifa.splits import split_masks

from nifa_files import write_dblp, write_fairgnn, write_pygdebias


def test_pygdebias_loader(tmp_path):
    data = load_pygdebias(write_pygdebias(tmp_path), "toy", "label", "sex")
    assert data.num_nodes == 6 and data.x.shape == (6, 2)
    assert data.y.tolist() == [1, 0, 1, 0, -1, 1]
    assert data.sens.tolist() == [1, 0, 0, 1, 1, 0]          # sorted text values: Female=0, Male=1
    ei = data.edge_index
    assert ei.shape[1] == 12 and set(zip(*ei.tolist())) == {(b, a) for a, b in zip(*ei.tolist())}
    assert not data.integer_features                          # 0.5 / 1.5 are not integers


def test_fairgnn_loader_maps_user_ids_and_binarizes(tmp_path):
    data = load_fairgnn(write_fairgnn(tmp_path), "pz", "I_am_working_in_field", "region", binarize_labels=True)
    assert data.y.tolist() == [1, 0, 1, 1, -1]                # 3 and 2 -> 1, -1 unknown
    assert data.sens.tolist() == [0, 1, 1, 0, 0]
    assert sorted(zip(*data.edge_index.tolist()))[:2] == [(0, 1), (0, 4)]


def test_dblp_loader_keeps_lcc_and_sparse_features(tmp_path):
    data = load_dblp(write_dblp(tmp_path))
    assert data.num_nodes == 4                                 # author 5 is not connected
    assert data.x.layout == torch.sparse_csr and data.integer_features
    assert data.y.tolist() == [1, 0, -1, 0] and data.sens.tolist() == [0, 1, -1, 1]
    assert data.x.to_dense()[3].tolist() == [0, 0, 5]


@pytest.mark.parametrize("case, needle", [
    ("missing", "toy_edges.txt"),
    ("column", "no column 'sex'"),
    ("nonbinary", "line 4"),
    ("edge_line", "line 3"),
    ("edge_id", "edge 2"),
    ("feature", "line 2"),
])
def test_bad_inputs_name_file_and_line(tmp_path, case, needle):
    if case == "missing":
        write_pygdebias(tmp_path)
        (tmp_path / "toy_edges.txt").unlink()
        col = "sex"
    elif case == "column":
        write_pygdebias(tmp_path, header="label,gender,f1,f2")
        col = "sex"
    elif case == "nonbinary":
        write_pygdebias(tmp_path, header="label,s,f1,f2",
                        rows=["1,0,1,1", "0,1,1,1", "1,2,1,1", "0,0,1,1", "1,1,1,1", "0,0,1,1"])
        col = "s"
    elif case == "edge_line":
        write_pygdebias(tmp_path, edges=["0 1", "1 2", "2 x", "3 4"])
        col = "sex"
    elif case == "edge_id":
        write_pygdebias(tmp_path, edges=["0 1", "1 9"])
        col = "sex"
    else:
        write_pygdebias(tmp_path, rows=["1,Male,abc,1", "0,Female,1.5,0", "1,Female,2,1", "0,Male,0,0"])
        col = "sex"
    with pytest.raises(ForetellError) as err:
        load_pygdebias(tmp_path, "toy", "label", col)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg
    if case != "column":
        assert str(tmp_path) in msg


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    write_pygdebias(tmp_path, edges=["0 1", "1 2 3"])
    rc = main(["nifa", "run", "--format", "pygdebias", "--data-dir", str(tmp_path), "--name", "toy",
               "--label-column", "label", "--sensitive-column", "sex", "--quick"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("foretell: error:") and "line 2" in err and len(err.splitlines()) == 1


def test_cli_unknown_victim(capsys):
    rc = main(["nifa", "run", "--victims", "gcn,mlp", "--quick"])
    assert rc == 2 and "accepted: gcn, sage" in capsys.readouterr().err


def test_split_is_fixed_by_seed_and_disjoint():
    y = torch.tensor([0, 1] * 50 + [-1] * 10)
    a, b = split_masks(y, 3), split_masks(y, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], split_masks(y, 4)[0])
    tr, va, te = a
    assert int(tr.sum()) == 50 and int(va.sum()) == 25 and int(te.sum()) == 25
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert not (tr | va | te)[100:].any()


def test_metrics_hand_computed():
    from foretell.nifa.metrics import fairness_metrics, summarise

    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    s = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    m = fairness_metrics(p, y, s)
    # P(yhat=1|s=1)=3/4, P(yhat=1|s=0)=1/4 -> SP=1/2 for both classes
    assert m["sp"] == pytest.approx(0.5)
    # TPR: s1 2/2, s0 1/2 -> 0.5 ; TNR: s1 1/2, s0 2/2 -> 0.5 ; EO coded = mean = 0.5
    assert m["eo"] == pytest.approx(0.5) and m["eo_tpr"] == pytest.approx(0.5)
    assert m["acc"] == pytest.approx(6 / 8)
    assert m["sp_signed"] == pytest.approx(0.5)                       # 3/4 - 1/4, group 1 higher
    assert fairness_metrics(p, y, 1 - s)["sp_signed"] == pytest.approx(-0.5)   # groups swapped: sign flips
    p2 = np.array([1, 1, 0, 0, 1, 0, 0, 0])  # TPR gap 0.5, TNR gap 0 -> coded EO 0.25
    m2 = fairness_metrics(p2, y, s)
    assert m2["eo"] == pytest.approx(0.25) and m2["eo_tpr"] == pytest.approx(0.5)
    assert fairness_metrics(p, y, np.array([1, 1, 1, 1, -1, -1, -1, -1]))["sp"] == 0.0  # empty group -> 0
    summ = summarise([{"acc": 0.5, "sp": 0.1, "eo": 0.2, "eo_tpr": 0.3}, {"acc": 0.7, "sp": 0.3, "eo": 0.2, "eo_tpr": 0.1}])
    assert summ["acc"] == pytest.approx(60) and summ["acc_std"] == pytest.approx(10) and summ["eo_std"] == 0
