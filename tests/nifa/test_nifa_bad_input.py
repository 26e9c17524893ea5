"""Bad input to `foretell nifa ...`: one line on stderr, exit status 2, saying what was wrong and what
is accepted, before any work, and no output file left behind."""

import json
import math

import numpy as np
import pytest

from foretell.cli import build_parser, main
from foretell.core.errors import ForetellError
from foretell.nifa.attack import NIFAConfig
from foretell.nifa.loaders import load_fairgnn

from nifa_files import write_fairgnn
from test_attack_steps import toy_graph
from test_report import two_reports

N = 40
COLS = ["--format", "fairgnn", "--name", "pz", "--label-column", "I_am_working_in_field",
        "--sensitive-column", "region"]
FAST = ["--quick", "--victims", "gcn", "--baselines", "none", "--max-epochs", "5", "--num-injected", "2",
        "--edges-per-injected", "2"]


def rows(n=N):
    """user_id, region (sensitive), label, f1, f2 of n users (ids 100 ..)."""
    return [f"{100 + i},{i % 2},{(i // 2) % 2},{i % 3},{i % 4}" for i in range(n)]


def ring(n=N):
    return [f"{100 + i} {100 + (i + k) % n}" for i in range(n) for k in (1, 2, 5)]


def toy(d, rows_=None):
    return write_fairgnn(d, rows=rows_ or rows(), edges=ring())


def rc_err(argv, capsys):
    """(exit status, stderr) of ``foretell`` with ``argv``, whether argparse or the command stopped it."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err.strip()


def assert_one_line_error(rc, err, *needles):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, err


def outputs(tmp_path):
    return tmp_path / "out" / "r.json", tmp_path / "out" / "p.pt"


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# --- FairGNN files -------------------------------------------------------------------------------


def test_fairgnn_user_id_that_is_not_an_integer_names_file_and_line(tmp_path, capsys):
    r = rows()
    r[5] = "abc,1,0,1,1"
    toy(tmp_path, r)
    js, _ = outputs(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--json", js], capsys)
    assert_one_line_error(rc, err, f"{tmp_path / 'pz.csv'}, line 7", "user_id is 'abc'", "integer")
    assert_nothing_written(tmp_path)


def test_fairgnn_duplicate_user_id_blames_the_csv(tmp_path, capsys):
    r = rows()
    r[7] = "101,1,0,1,1"                       # 101 is already the id of line 3
    toy(tmp_path, r)
    with pytest.raises(ForetellError, match=r"pz\.csv, line 9: duplicate user_id 101 \(also on line 3\)"):
        load_fairgnn(tmp_path, "pz", "I_am_working_in_field", "region")
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST], capsys)
    assert_one_line_error(rc, err, "duplicate user_id 101", str(tmp_path / "pz.csv"))
    assert "relationship" not in err


def test_fairgnn_csv_without_feature_columns_is_rejected(tmp_path, capsys):
    (tmp_path / "pz.csv").write_text("user_id,region,I_am_working_in_field\n"
                                     + "\n".join(r.rsplit(",", 2)[0] for r in rows()) + "\n")
    (tmp_path / "pz_relationship.txt").write_text("\n".join(ring()) + "\n")
    js, pt = outputs(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--json", js, "--save-poisoned", pt],
                     capsys)
    assert_one_line_error(rc, err, "no feature columns left", "user_id, region, I_am_working_in_field")
    assert_nothing_written(tmp_path)


def test_fairgnn_unknown_drop_column_lists_the_columns(tmp_path, capsys):
    toy(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--drop-columns", "f1,Agee"], capsys)
    assert_one_line_error(rc, err, "no column 'Agee'", "--drop-columns", "user_id, region, I_am_working_in_field, f1, f2")


def test_label_and_sensitive_column_must_differ(tmp_path, capsys):
    toy(tmp_path)
    with pytest.raises(ForetellError, match="both 'region'"):
        load_fairgnn(tmp_path, "pz", "region", "region")
    with pytest.raises(ForetellError, match="'user_id' holds the node ids"):
        load_fairgnn(tmp_path, "pz", "user_id", "region")
    rc, err = rc_err(["nifa", "run", "--format", "fairgnn", "--name", "pz", "--data-dir", tmp_path,
                      "--label-column", "region", "--sensitive-column", "region", *FAST], capsys)
    assert_one_line_error(rc, err, "--label-column and --sensitive-column are both 'region'")


# --- nifa merge ----------------------------------------------------------------------------------


def _report_files(tmp_path):
    a, b, _ = two_reports()
    pa, pb = tmp_path / "r0.json", tmp_path / "r1.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    return pa, pb, b


def _edit(report, how):
    report = json.loads(json.dumps(report))
    if how == "per_seed_text":
        report["per_seed"] = "x"
    elif how == "per_seed_empty":
        report["per_seed"] = []
    elif how == "ints":
        report.update(dataset=1, num_nodes=1, num_edges=1, split=1, config=1, per_seed=1)
    elif how == "config_int":
        report["config"] = 1
    elif how == "runs_emptied":
        for s in report["per_seed"]:
            s["runs"] = {}
    elif how == "victim_runs_emptied":
        report["per_seed"][0]["runs"]["gcn"] = {}
    elif how == "metric_text":
        report["per_seed"][0]["runs"]["gcn"]["nifa"]["sp"] = "high"
    elif how == "unknown_config_field":
        report["config"]["nifa"]["bogus"] = 1
    return report


@pytest.mark.parametrize("how, needle", [
    ("binary", "not UTF-8 text"),
    ("per_seed_text", "'per_seed' is 'x', expected a list"),
    ("per_seed_empty", "'per_seed' is empty"),
    ("ints", "'dataset' is 1, expected a name"),
    ("config_int", "'config' is 1, expected an object"),
    ("runs_emptied", "has no results of victim 'gcn'"),
    ("victim_runs_emptied", "has no results on graph 'clean'"),
    ("metric_text", "per_seed[0].runs.gcn.nifa.sp is 'high', expected a number"),
    ("unknown_config_field", "'config.nifa' does not fit NIFAConfig"),
])
def test_merge_bad_report_is_one_line_naming_the_file(tmp_path, capsys, how, needle):
    pa, pb, b = _report_files(tmp_path)
    if how == "binary":
        pb.write_bytes(bytes(range(256)))
    else:
        pb.write_text(json.dumps(_edit(b, how)))
    out = tmp_path / "m.json"
    rc, err = rc_err(["nifa", "merge", pa, pb, "--json", out], capsys)
    assert_one_line_error(rc, err, str(pb), needle)
    assert not out.exists()


def test_merge_of_good_reports_still_works(tmp_path, capsys):
    pa, pb, _ = _report_files(tmp_path)
    out = tmp_path / "m.json"
    rc, err = rc_err(["nifa", "merge", pa, pb, "--json", out], capsys)
    assert rc == 0, err
    assert json.loads(out.read_text())["seeds"] == [0, 1]


# --- flag ranges (argparse: one line, exit 2, before anything runs) ------------------------------


@pytest.mark.parametrize("flags, needle", [
    (["--threads", "100000"], "--threads: 100000 is outside [1, 256]"),
    (["--threads", "0"], "--threads: 0 is outside [1, 256]"),
    (["--seed", str(2**32)], f"--seed: {2**32} is outside [0, {2**32 - 1}]"),
    (["--seeds", f"0,{2**32}"], f"--seeds: {2**32} is outside [0, {2**32 - 1}]"),
    (["--seeds", "0,-1"], "--seeds: -1 is outside"),
    (["--seeds", "1,x"], "--seeds: 'x' is not an integer"),
    (["--seeds", "1,1"], "names a seed twice"),
    (["--seeds", ","], "lists no seeds"),
    (["--split-seed", str(2**32)], "--split-seed"),
    (["--num-injected", "1"], "--num-injected: 1 is below 2"),
    (["--injection-rate", "0"], "--injection-rate: 0.0 is outside (0, 1)"),
    (["--injection-rate", "1"], "--injection-rate: 1.0 is outside (0, 1)"),
    (["--injection-rate", "nan"], "--injection-rate: nan is outside"),
    (["--edges-per-injected", "0"], "--edges-per-injected: 0 is below 1"),
    (["--k", "0"], "--k"),
    (["--k", "1.5"], "--k"),
    (["--alpha", "-1"], "--alpha: -1.0 is out of range (accepted: finite numbers >= 0)"),
    (["--beta", "inf"], "--beta: inf is out of range (accepted: finite numbers >= 0)"),
    (["--max-iter", "-1"], "--max-iter: -1 is below 0"),
    (["--max-step", "0"], "--max-step: 0 is below 1"),
    (["--uncertainty-epochs", "0"], "--uncertainty-epochs: 0 is below 1"),
    (["--uncertainty-lr", "inf"], "--uncertainty-lr: inf is out of range (accepted: finite numbers > 0)"),
    (["--uncertainty-lr", "0"], "--uncertainty-lr: 0.0 is out of range"),
    (["--uncertainty-lr=-1e-3"], "--uncertainty-lr: -0.001 is out of range"),
    (["--uncertainty-init-gain", "0"], "--uncertainty-init-gain: 0.0 is out of range"),
    (["--num-masks", "1"], "--num-masks: 1 is outside [2, 1000]"),
    (["--num-masks", "100000"], "--num-masks: 100000 is outside [2, 1000]"),
    (["--defense", "1.5"], "--defense: 1.5 is outside [0, 1)"),
    (["--defense", "1"], "--defense: 1.0 is outside [0, 1)"),
])
def test_out_of_range_flags_are_usage_errors(flags, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["nifa", "run", "--dataset", "german", *flags])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and err.count("\n") == 1, err


def test_attack_flags_are_range_checked_too(capsys):
    for flags in (["--threads", "100000"], ["--seed", str(2**32)], ["--num-masks", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["nifa", "attack", "--dataset", "german", "--save-poisoned", "p.pt", *flags])
    capsys.readouterr()


def test_config_rejects_non_finite_numbers_and_huge_seeds():
    for bad in (dict(uncertainty_lr=math.inf), dict(lr=math.nan), dict(beta=math.inf), dict(seed=2**32)):
        with pytest.raises(ForetellError, match="invalid NIFA config"):
            NIFAConfig(**bad).validate()


# --- budget and degree fit the graph (checked before any work) ----------------------------------


def test_num_injected_above_the_labelled_nodes_is_rejected_before_work(tmp_path, capsys):
    toy(tmp_path)
    js, pt = outputs(tmp_path)
    rc, err = rc_err(["nifa", "attack", *COLS, "--data-dir", tmp_path, "--quick", "--num-injected", "1000",
                      "--edges-per-injected", "2", "--save-poisoned", pt, "--json", js], capsys)
    assert_one_line_error(rc, err, "--num-injected", "1000 exceeds the 40 labelled nodes", "accepted: 2 .. 40")
    assert_nothing_written(tmp_path)


def test_budget_and_degree_are_checked_on_the_data():
    data = toy_graph(n=60)
    labelled = int((data.y >= 0).sum())
    assert NIFAConfig(num_injected=labelled, edges_per_injected=1).check_data(data) == labelled
    with pytest.raises(ForetellError, match=f"exceeds the {labelled} labelled nodes"):
        NIFAConfig(num_injected=labelled + 1).check_data(data)
    with pytest.raises(ForetellError, match="--edges-per-injected.*exceeds the .* targets of sensitive group"):
        NIFAConfig(num_injected=2, edges_per_injected=1000).check_data(data)
    data.sens[:] = 0
    with pytest.raises(ForetellError, match="sensitive group 1 has no labelled nodes"):
        NIFAConfig(num_injected=2, edges_per_injected=1).check_data(data)


# --- everything checked before anything is written ----------------------------------------------


def test_bad_defense_leaves_no_poisoned_graph(tmp_path, capsys):
    toy(tmp_path)
    js, pt = outputs(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--defense", "1.5",
                      "--json", js, "--save-poisoned", pt], capsys)
    assert not pt.exists() and not js.exists(), err
    assert_one_line_error(rc, err, "--defense")


def test_victim_that_cannot_train_on_the_data_stops_before_the_attack_saves(tmp_path, capsys):
    toy(tmp_path, [f"{100 + i},{i % 2},{i % 3},{i % 3},{i % 4}" for i in range(N)])   # 3 classes
    js, pt = outputs(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--victims", "gcn,fairgnn",
                      "--json", js, "--save-poisoned", pt], capsys)
    assert not pt.exists() and not js.exists(), err
    assert_one_line_error(rc, err, "fairgnn need binary labels", "3 classes")


def test_json_and_save_poisoned_on_one_file_conflict(tmp_path, capsys):
    toy(tmp_path)
    _, pt = outputs(tmp_path)
    rc, err = rc_err(["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, "--json", pt, "--save-poisoned", pt],
                     capsys)
    assert_one_line_error(rc, err, "--json and --save-poisoned would both write")
    assert_nothing_written(tmp_path)


# --- contradicting or ignored flags -------------------------------------------------------------


@pytest.mark.parametrize("extra, needle", [
    (["--num-injected", "5", "--injection-rate", "0.5"], "--num-injected 5 and --injection-rate 0.5 conflict"),
    (["--dataset", "german"], "--dataset german and --format fairgnn conflict"),
    (["--shared-dir", "{tmp}"], "--shared-dir is not used with --format"),
    (["--seed", "1", "--seeds", "2,3"], "--seed 1 and --seeds 2,3 conflict"),
    (["--fairgnn-encoder", "gat"], "--fairgnn-encoder gat only applies to the fairgnn victim"),
])
def test_conflicting_flags_with_own_files(tmp_path, capsys, extra, needle):
    toy(tmp_path)
    js, pt = outputs(tmp_path)
    argv = ["nifa", "run", *COLS, "--data-dir", tmp_path, *FAST, *[e.replace("{tmp}", str(tmp_path)) for e in extra],
            "--json", js, "--save-poisoned", pt]
    if "--num-injected" in extra:
        argv.remove("--num-injected")
        argv.remove("2")                       # FAST's own --num-injected 2
    rc, err = rc_err(argv, capsys)
    assert_one_line_error(rc, err, needle)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("extra, needle", [
    (["--label-column", "Foo", "--name", "bar"], "--name, --label-column describe your own files and need --format"),
    (["--sensitive-column", "Gender"], "--sensitive-column describes your own files and needs --format"),
    (["--drop-columns", "Age"], "--drop-columns describes your own files and needs --format"),
    (["--shared-dir", "{tmp}"], "--data-dir and --shared-dir conflict"),
])
def test_own_file_flags_without_format_are_rejected(tmp_path, capsys, extra, needle):
    js = tmp_path / "out" / "r.json"
    rc, err = rc_err(["nifa", "run", "--dataset", "german", "--data-dir", tmp_path, "--quick",
                      *[e.replace("{tmp}", str(tmp_path)) for e in extra], "--json", js], capsys)
    assert_one_line_error(rc, err, needle)
    assert_nothing_written(tmp_path)


def test_drop_columns_do_not_apply_to_the_dblp_format(tmp_path, capsys):
    rc, err = rc_err(["nifa", "run", "--format", "dblp", "--data-dir", tmp_path, "--name", "dblp",
                      "--label-column", "label", "--sensitive-column", "gender", "--drop-columns", "name"], capsys)
    assert_one_line_error(rc, err, "--drop-columns does not apply to --format dblp")


def test_baselines_flag_is_checked_before_loading(tmp_path, capsys):
    for text, needle in (("random,random", "names one twice"), (",", "unknown baseline"), ("fagn", "'fagn'")):
        rc, err = rc_err(["nifa", "run", "--dataset", "german", "--data-dir", tmp_path, "--baselines", text], capsys)
        assert_one_line_error(rc, err, needle, *(["accepted: random, fagnn"] if needle != "names one twice" else []))


def test_loader_accepts_float_user_ids(tmp_path):
    write_fairgnn(tmp_path, rows=["10.0,0,1,0.5,3", "11,1,0,1.0,2", "12,1,3,0.0,-1", "13,0,2,0.2,1", "14,0,-1,0.1,0"])
    data = load_fairgnn(tmp_path, "pz", "I_am_working_in_field", "region", binarize_labels=True)
    assert data.num_nodes == 5 and np.array_equal(data.y.numpy(), [1, 0, 1, 1, -1])
