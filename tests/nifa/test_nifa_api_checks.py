"""Bad input to the public Python API of foretell.nifa: a one-line ForetellError saying what was wrong
and what is accepted, before any work -- never a raw torch / numpy / scipy error, a silently wrong
result, or a crashed process (see foretell.nifa.validate)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.nifa import NIFA, NIFAConfig, PoisonedGraph, VictimConfig, add_split, fairness_metrics, train_victim
from foretell.nifa.baselines import fagnn_injection, random_injection
from foretell.nifa.defense import apply_defense
from foretell.nifa.fair_victims import FairConfig, train_fair
from foretell.nifa.fairsin import FairSINConfig

from test_attack_steps import toy_graph

N = 60
FAST = dict(num_injected=2, edges_per_injected=2, max_iter=1, max_step=2, hidden=8, num_masks=2, uncertainty_epochs=2)
VC = VictimConfig(max_epochs=3, min_epochs=0)


def attack(data, targets=None, **kw):
    return NIFA(NIFAConfig(**{**FAST, **kw})).attack(data, targets=targets)


def graph(**changes):
    """toy_graph() with attributes replaced (None: removed)."""
    d = toy_graph(n=N)
    for key, value in changes.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    return d


def one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


# --- item 1: a node id past the end of the graph ----------------------------------------------------

CRASH = r"""
import os, sys, warnings
os.environ["FORETELL_NO_PROGRESS"] = "1"; warnings.filterwarnings("ignore")
sys.path.insert(0, {tests!r})
import torch
from test_attack_steps import toy_graph
from foretell.core.errors import ForetellError
from foretell.nifa import NIFA, NIFAConfig, VICTIMS, VictimConfig, train_victim
from foretell.nifa.baselines import fagnn_injection, random_injection
for bad in (500, -1):
    d = toy_graph(n=60)
    d.edge_index = torch.tensor([[0, 1, bad], [1, 0, 2]])
    calls = [(v, lambda v=v: train_victim(v, d, 0, VictimConfig(max_epochs=3, min_epochs=0))) for v in VICTIMS]
    calls += [("attack", lambda: NIFA(NIFAConfig(num_injected=2, edges_per_injected=2)).attack(d)),
              ("random", lambda: random_injection(d, 2, 2, 0)), ("fagnn", lambda: fagnn_injection(d, 0))]
    for name, call in calls:
        try:
            call()
            print(name, bad, "NO ERROR")
        except ForetellError as exc:
            print(name, bad, "OK" if f"node id {{bad}}" in str(exc) and "ids 0 .. 59" in str(exc) else exc)
"""


def test_out_of_range_edge_ids_are_an_error_not_a_crash():
    # train_victim("gcn") on an edge to node 500 of a 60-node graph used to abort the process (heap
    # corruption, exit 134): run it in a child process so that a regression cannot take pytest down
    tests = str(Path(__file__).parent)
    res = subprocess.run([sys.executable, "-c", CRASH.format(tests=tests)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = res.stdout.split("\n")
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 2 * 10 and all(line.endswith(" OK") for line in lines), res.stdout


def test_out_of_range_edge_id_in_the_attack_is_a_clear_error():
    d = graph(edge_index=torch.tensor([[0, 1, 500], [1, 0, 2]]))
    with pytest.raises(ForetellError) as exc:
        attack(d)
    one_line(exc, "NIFA.attack", "edge_index holds node id 500", "60 nodes", "ids 0 .. 59")


# --- item 2: the graph check, at every entry point ------------------------------------------------

def _unlabelled_training_node():
    d = toy_graph(n=N)
    d.y[torch.nonzero(d.train_mask)[0, 0]] = -1
    return d


def _one_group_in_training():
    d = toy_graph(n=N)
    d.sens[d.train_mask] = 0
    return d


BAD_GRAPHS = {
    "dict": (lambda: dict(toy_graph(n=N)), "data is a dict, expected a torch_geometric.data.Data"),
    "None": (lambda: None, "data is None"),
    "x int": (lambda: graph(x=toy_graph(n=N).x.long()), "data.x has dtype torch.int64, expected torch.float32"),
    "x float64": (lambda: graph(x=toy_graph(n=N).x.double()), "expected torch.float32"),
    "x NaN": (lambda: graph(x=torch.full((N, 8), math.nan)), "data.x holds 480 NaN or infinite"),
    "x inf sparse": (lambda: graph(x=torch.full((N, 8), math.inf).to_sparse_csr()), "NaN or infinite"),
    "x rows": (lambda: graph(x=torch.randn(N - 5, 8)), "data.x has 55 rows but data.num_nodes is 60"),
    "edge_index float": (lambda: graph(edge_index=toy_graph(n=N).edge_index.float()), "expected torch.long"),
    "edge_index [E, 2]": (lambda: graph(edge_index=toy_graph(n=N).edge_index.t().contiguous()),
                          "expected [2, num_edges]"),
    "y float": (lambda: graph(y=(torch.arange(N) % 2).float()), "data.y has dtype torch.float32"),
    "y length": (lambda: graph(y=torch.arange(N - 5) % 2), "data.y has shape [55], expected [60]"),
    "y classes 1, 2": (lambda: graph(y=torch.arange(N) % 2 + 1), "holds the classes [1, 2]; accepted: 0 .. C-1"),
    "y below -1": (lambda: graph(y=torch.where(torch.arange(N) == 5, -2, torch.arange(N) % 2)), "data.y holds -2"),
    "y one class": (lambda: graph(y=torch.zeros(N, dtype=torch.long)), "1 known class"),
    "sens 3 values": (lambda: graph(sens=torch.arange(N) % 3), "data.sens holds the values [0, 1, 2]"),
    "sens 1, 2": (lambda: graph(sens=torch.arange(N) % 2 + 1), "data.sens holds the values [1, 2]"),
    "sens bool": (lambda: graph(sens=(torch.arange(N) % 2).bool()), "data.sens has dtype torch.bool"),
    "sens numpy": (lambda: graph(sens=np.arange(N) % 2), "data.sens is a ndarray, expected a torch tensor"),
    "train_mask int": (lambda: graph(train_mask=toy_graph(n=N).train_mask.long()), "train_mask has dtype torch.int64"),
    "train_mask index": (lambda: graph(train_mask=torch.arange(30)), "train_mask has dtype torch.int64"),
    "train_mask empty": (lambda: graph(train_mask=torch.zeros(N, dtype=torch.bool)), "train_mask selects no node"),
    "unlabelled training node": (_unlabelled_training_node, "train_mask selects 1 node(s) with unknown label"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
@pytest.mark.parametrize("entry", ["attack", "gcn", "fairgnn", "fairsin"])
def test_bad_graph_is_one_line_error_at_each_entry_point(case, entry):
    make, needle = BAD_GRAPHS[case]
    data = make()
    with pytest.raises(ForetellError) as exc:
        if entry == "attack":
            attack(data)
        else:
            train_victim(entry, data, 0, VC)
    one_line(exc, needle)


@pytest.mark.parametrize("victim", ["gcn", "fairgnn", "fairsin"])
def test_victims_name_a_missing_attribute(victim):
    for key in ("sens", "y", "x"):
        with pytest.raises(ForetellError) as exc:
            train_victim(victim, graph(**{key: None}), 0, VC)
        one_line(exc, f"victim {victim}: data has no {key!r}", "it needs x, y, sens, edge_index, train_mask")


@pytest.mark.parametrize("case", ["x int", "edge_index [E, 2]", "sens 3 values", "y float", "dict"])
def test_baselines_check_the_graph(case):
    make, needle = BAD_GRAPHS[case]
    for call in (lambda d: random_injection(d, 2, 2, 0), lambda d: fagnn_injection(d, 0)):
        with pytest.raises(ForetellError) as exc:
            call(make())
        one_line(exc, needle)


def test_both_sensitive_groups_are_needed_where_the_method_compares_them():
    d = _one_group_in_training()             # the test nodes still hold both groups
    with pytest.raises(ForetellError) as exc:
        attack(d)
    one_line(exc, "NIFA.attack", "train_mask hold no node of sensitive group 1")
    for victim in ("fairgnn", "fairvgnn"):
        with pytest.raises(ForetellError) as exc:
            train_victim(victim, d, 0, VC)
        one_line(exc, f"victim {victim}", "train_mask hold no node of sensitive group 1")
    assert {"acc", "sp"} <= set(train_victim("gcn", d, 0, VC))   # the plain GCN does not train on sens
    d = toy_graph(n=N)
    d.sens[d.test_mask] = 1                  # SP / EO on the test nodes would be a silent 0
    with pytest.raises(ForetellError) as exc:
        train_victim("gcn", d, 0, VC)
    one_line(exc, "victim gcn", "test_mask hold no node of sensitive group 0", "SP and EO")


def test_binary_methods_reject_multiclass_labels_and_plain_ones_accept_them():
    d = graph(y=torch.arange(N) % 3)
    with pytest.raises(ForetellError) as exc:
        fagnn_injection(d, 0)
    one_line(exc, "fagnn_injection needs binary labels", "3 classes")
    for victim in ("fairgnn", "fairvgnn", "fairsin"):
        with pytest.raises(ForetellError, match="needs binary labels"):
            train_victim(victim, d, 0, VC)
    assert attack(d).data.num_nodes == N + 2          # multi-class: NIFA's metrics average over classes
    assert set(train_victim("gcn", d, 0, VC)) >= {"acc", "sp", "eo"}


def test_empty_val_or_test_mask_is_an_error_for_the_victims():
    for key in ("val_mask", "test_mask"):
        d = toy_graph(n=N)
        d[key] = torch.zeros(N, dtype=torch.bool)
        with pytest.raises(ForetellError) as exc:
            train_victim("gcn", d, 0, VC)
        one_line(exc, f"data.{key} selects no node")


def test_add_split_checks_data_and_seed():
    with pytest.raises(ForetellError) as exc:
        add_split(graph(y=(torch.arange(N) % 2).float()))
    one_line(exc, "add_split", "data.y has dtype torch.float32")
    with pytest.raises(ForetellError) as exc:
        add_split(None)
    one_line(exc, "add_split: data is None")
    for seed in (-1, 2.5, "1", 2 ** 32):
        with pytest.raises(ForetellError) as exc:
            add_split(toy_graph(n=N), seed=seed)
        one_line(exc, "add_split: seed=")


def test_defense_and_uncertainty_check_their_node_arguments():
    d = toy_graph(n=N)
    with pytest.raises(ForetellError) as exc:
        apply_defense(d, 0.5, np.zeros(N - 1))
    one_line(exc, "apply_defense: uncertainty has shape [59]", "expected [60]")
    with pytest.raises(ForetellError) as exc:
        NIFA(NIFAConfig(**FAST)).uncertainty(d, nodes=[1, 2, 600])
    one_line(exc, "NIFA.uncertainty: nodes holds node id 600")


def test_evaluate_checks_every_victim_before_the_attack_saves(tmp_path):
    from foretell.nifa.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(victims=("gcn", "fairgnn"), baselines=(), nifa=NIFAConfig(**FAST), victim=VC)
    out = tmp_path / "p.pt"
    with pytest.raises(ForetellError) as exc:
        evaluate("toy", _one_group_in_training(), cfg, save_poisoned=out, log=lambda m: None)
    one_line(exc, "train_mask hold no node of sensitive group 1")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    for seeds, needle in ((0, "seeds is 0"), ((), "seeds is ()"), ((0, -1), "seed=-1")):
        cfg.seeds = seeds
        with pytest.raises(ForetellError) as exc:
            evaluate("toy", toy_graph(n=N), cfg, save_poisoned=out, log=lambda m: None)
        one_line(exc, "evaluate", needle)
    assert list(tmp_path.iterdir()) == []


# --- item 3: attack(targets=...) ----------------------------------------------------------------------

@pytest.mark.parametrize("targets, needle", [
    ({0: [1, 2, 3]}, "targets must be a dict {0: nodes, 1: nodes}"),
    ([[1, 2], [3, 4]], "targets must be a dict"),
    ({0: [1000, 1001], 1: [2000, 2001]}, "targets[0] holds node id 1001, but the graph has 60 nodes"),
    ({0: [0.5, 1.5], 1: [2, 3]}, "targets[0] must be a 1-D list / array / tensor of integer node ids"),
])
def test_attack_targets_are_checked(targets, needle):
    with pytest.raises(ForetellError) as exc:
        attack(toy_graph(n=N), targets=targets)
    one_line(exc, "NIFA.attack", needle)


def test_attack_targets_must_be_distinct_nodes_of_their_group():
    d = toy_graph(n=N)
    g0, g1 = (torch.nonzero(d.sens == g).view(-1) for g in (0, 1))
    with pytest.raises(ForetellError) as exc:
        attack(d, targets={0: g1[:3], 1: g1[3:6]})
    one_line(exc, "targets[0] holds node", "must have sens == 0")
    with pytest.raises(ForetellError) as exc:
        attack(d, targets={0: [int(g0[0])] * 3, 1: g1[:3]})
    one_line(exc, "targets[0] names a node twice")
    first = attack(d)                                  # reusing an attack's own targets still works
    again = attack(d, targets=first.targets)
    assert torch.equal(again.data.edge_index, first.data.edge_index)


# --- item 4: NIFAConfig ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    dict(num_injected=2.5), dict(num_injected="5"), dict(num_injected=True), dict(edges_per_injected=2.5),
    dict(max_iter=1.0), dict(max_step=2.5), dict(hidden=0), dict(hidden=-4), dict(num_masks=2.5),
    dict(uncertainty_epochs=2.5), dict(uncertainty_check_every=-1), dict(seed=2.5), dict(seed="1"),
    dict(seed=-1), dict(k=True), dict(alpha=True), dict(keep_prob=1.5), dict(directional_gaps="no"),
    dict(use_all_labels_for_uncertainty=1), dict(device=0),
])
def test_nifa_config_fields_have_their_types_and_ranges(bad):
    (name, value), = bad.items()
    with pytest.raises(ForetellError) as exc:
        NIFA(NIFAConfig(**{**FAST, **bad}))
    one_line(exc, "invalid NIFA config", f"{name}={value!r}")


def test_nifa_config_accepts_numpy_numbers_as_plain_numbers():
    cfg = NIFAConfig(num_injected=np.int64(4), seed=np.int64(3), beta=np.float32(2.0), directional_gaps=np.bool_(True))
    cfg.validate()
    assert type(cfg.num_injected) is int and type(cfg.seed) is int and type(cfg.beta) is float


def test_nifa_takes_a_config_not_a_dict():
    for bad in ({"k": 0.5}, {}, "dblp"):
        with pytest.raises(ForetellError) as exc:
            NIFA(bad)
        one_line(exc, "NIFA(config): config is a", "expected a NIFAConfig", "num_injected")


def test_preset_override_names_the_accepted_settings():
    with pytest.raises(ForetellError) as exc:
        NIFAConfig.preset("dblp", bogus=1)
    one_line(exc, "unknown setting(s) bogus", "accepted: num_injected")


def test_config_changed_after_construction_is_checked_at_attack():
    nifa = NIFA(NIFAConfig(**FAST))
    nifa.config.hidden = 2.5
    with pytest.raises(ForetellError, match="hidden=2.5 is not an integer"):
        nifa.attack(toy_graph(n=N))


# --- item 5: victim settings and seeds ----------------------------------------------------------

@pytest.mark.parametrize("bad", [dict(lr=math.nan), dict(lr=math.inf), dict(weight_decay=math.nan),
                                 dict(max_epochs=2.5), dict(hidden=True), dict(patience="3"), dict(min_epochs=-1)])
def test_victim_config_fields(bad):
    (name, value), = bad.items()
    with pytest.raises(ForetellError) as exc:
        VictimConfig(**bad)
    one_line(exc, "invalid victim settings", f"{name}={value!r}")


@pytest.mark.parametrize("bad", [dict(dropout=1.5), dict(fairgnn_encoder="gin"), dict(sens_number=0),
                                 dict(estimator_lr=math.nan), dict(fairvgnn_tau=0)])
def test_fair_config_fields(bad):
    (name, value), = bad.items()
    with pytest.raises(ForetellError) as exc:
        FairConfig(**bad)
    one_line(exc, "invalid fair-victim settings", f"{name}={value!r}")


def test_fairsin_config_fields():
    with pytest.raises(ForetellError) as exc:
        FairSINConfig(mlp_steps=0, delta=math.nan)
    one_line(exc, "invalid FairSIN settings", "delta=nan", "mlp_steps=0")


@pytest.mark.parametrize("seed", [-1, 2.5, "x", True, 2 ** 32])
def test_victim_seed_must_be_an_integer_in_range(seed):
    for victim in ("gcn", "fairgnn", "fairsin"):
        with pytest.raises(ForetellError) as exc:
            train_victim(victim, toy_graph(n=N), seed, VC)
        one_line(exc, f"victim {victim}: seed={seed!r}", "[0, 4294967295]")


def test_victim_cfg_must_be_a_config():
    with pytest.raises(ForetellError) as exc:
        train_victim("gcn", toy_graph(n=N), 0, cfg={"max_epochs": 3})
    one_line(exc, "cfg is a dict, expected a VictimConfig", "VictimConfig(**settings)", "max_epochs")
    with pytest.raises(ForetellError, match="expected a FairConfig"):
        train_fair("fairgnn", toy_graph(n=N), 0, VC, fc={"dropout": 0.1})
    with pytest.raises(ForetellError) as exc:
        train_victim(None, toy_graph(n=N), 0, VC)
    one_line(exc, "unknown victim None; accepted: gcn, sage, appnp, sgc, fairgnn, fairvgnn, fairsin")


def test_victim_config_changed_after_construction_is_checked():
    cfg = VictimConfig(max_epochs=3, min_epochs=0)
    cfg.lr = -1.0
    with pytest.raises(ForetellError, match="lr=-1.0 is outside"):
        train_victim("gcn", toy_graph(n=N), 0, cfg)


def test_random_injection_counts_are_integers():
    for kw, needle in ((dict(num_injected=2.5), "num_injected=2.5"), (dict(degree=0), "degree=0"),
                       (dict(seed=-1), "seed=-1")):
        args = {"num_injected": 2, "degree": 2, "seed": 0, **kw}
        with pytest.raises(ForetellError) as exc:
            random_injection(toy_graph(n=N), **args)
        one_line(exc, "random_injection", needle)


# --- item 6: fairness_metrics -----------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (([0, 1], [0, 1, 1], [0, 1, 0]), "lengths 2, 3 and 3"),
    (([], [], []), "are empty"),
    (([0, 1, 1], [0, 1, 1], [0, 1, 2]), "sens holds [2]; accepted: 0 and 1"),
    (([0, 1, 1], [0, 1, 1], [1, 2, 1]), "sens holds [2]"),
    (([0, 1, 1], [0, -1, 1], [0, 1, 0]), "y holds -1"),
    (([0.5, 1, 1], [0, 1, 1], [0, 1, 0]), "pred holds non-integer values"),
    (([[0, 1]], [[0, 1]], [[0, 1]]), "pred is a list of shape [1, 2]"),
])
def test_fairness_metrics_bad_input(args, needle):
    with pytest.raises(ForetellError) as exc:
        fairness_metrics(*args)
    one_line(exc, "fairness_metrics", needle)


def test_fairness_metrics_num_classes_and_documented_one_group_case():
    with pytest.raises(ForetellError, match="num_classes=1; accepted: None or an integer >= 2"):
        fairness_metrics([0, 1], [0, 1], [0, 1], num_classes=1)
    m = fairness_metrics(torch.tensor([0, 1]), np.array([0.0, 1.0]), [0, 1], num_classes=2)
    assert m["acc"] == 1.0
    assert fairness_metrics([0, 1], [0, 1], [0, 0])["sp"] == 0.0       # one group: documented 0.0


# --- item 7: PoisonedGraph save / load -----------------------------------------------------------

def test_save_to_a_directory_is_a_clear_error_and_leaves_nothing(tmp_path):
    pg = attack(toy_graph(n=N))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ForetellError) as exc:
        pg.save(target)
    one_line(exc, f"cannot save the poisoned graph to {target}: it is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and list(target.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ForetellError, match="cannot save the poisoned graph"):
        pg.save(tmp_path / "file" / "p.pt")          # parent is a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]
    back = PoisonedGraph.load(pg.save(tmp_path / "ok.pt"))
    assert torch.equal(back.injected_index, pg.injected_index)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ok.pt", "out"]


@pytest.mark.parametrize("content, needle", [
    (b"print('hello')\n", "torch.load failed"),
    (b"", "torch.load failed"),
    ("list", "it holds a list"),
    ("dict", "it holds a dict without data"),
])
def test_load_of_a_file_that_is_not_a_poisoned_graph_names_it(tmp_path, content, needle):
    path = tmp_path / "p.pt"
    if content == "list":
        torch.save([1, 2], path)
    elif content == "dict":
        torch.save({"a": 1}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ForetellError) as exc:
        PoisonedGraph.load(path)
    one_line(exc, str(path), "not a poisoned graph saved by foretell nifa", needle)


def test_load_of_a_directory(tmp_path):
    with pytest.raises(ForetellError) as exc:
        PoisonedGraph.load(tmp_path)
    one_line(exc, f"{tmp_path} is a directory")
