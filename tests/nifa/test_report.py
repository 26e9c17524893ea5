import pytest

from foretell.core.errors import ForetellError
from foretell.nifa.attack import NIFAConfig
from foretell.nifa.evaluate import EvalConfig, build_report, merge_reports
from foretell.nifa.fair_victims import FairConfig
from foretell.nifa.victims import VictimConfig
from test_attack_steps import toy_graph


def seed_result(seed, sp):
    m = lambda s: {"acc": 0.9, "sp": s, "eo": s / 2, "eo_tpr": s, "epochs": 10}  # noqa: E731
    return {"seed": seed, "attack_seconds": 2.0 + seed, "num_injected": 4,
            "runs": {"gcn": {"clean": m(0.1), "nifa": m(sp), "random": m(0.1)}}}


def two_reports():
    """Reports of the toy graph on seeds 0 and 1 (same config), and the graph."""
    data = toy_graph()
    data.split_seed = 0
    cfg = EvalConfig(seeds=(0, 1), victims=("gcn",), baselines=("random",), nifa=NIFAConfig(),
                     victim=VictimConfig(), fair=FairConfig())
    return build_report("toy", data, cfg, [seed_result(0, 0.2)]), build_report("toy", data, cfg, [seed_result(1, 0.4)]), data


def test_build_and_merge_reports():
    a, b, _ = two_reports()
    merged = merge_reports([a, b])
    assert merged["seeds"] == [0, 1] and merged["attack_seconds"] == pytest.approx(2.5)
    att = merged["victims"]["gcn"]["attacked"]
    assert att["sp"] == pytest.approx(30) and att["sp_std"] == pytest.approx(10) and att["eo"] == pytest.approx(15)
    assert merged["baselines"]["random"]["gcn"]["attacked"]["sp"] == pytest.approx(10)
    assert merged["num_edges"] == a["num_edges"] and merged["split"] == a["split"]
    with pytest.raises(ForetellError, match="share seeds"):
        merge_reports([a, a])


def test_merge_refuses_reports_of_other_data_or_config_and_incomplete_ones():
    a, b, data = two_reports()
    with pytest.raises(ForetellError, match="differs from report 0 in dataset"):
        merge_reports([a, dict(b, dataset="german")])
    other = EvalConfig(seeds=(1,), victims=("gcn",), baselines=("random",), nifa=NIFAConfig(beta=1.0),
                       victim=VictimConfig(), fair=FairConfig())
    with pytest.raises(ForetellError, match="in config"):
        merge_reports([a, build_report("toy", data, other, [seed_result(1, 0.4)])])
    with pytest.raises(ForetellError, match="marked incomplete"):
        merge_reports([a, dict(b, complete=False)])
    with pytest.raises(ForetellError, match="not `foretell nifa run` JSON reports"):
        merge_reports([a, {}])
    assert merge_reports([a, b])["seeds"] == [0, 1]


def test_merge_accepts_an_older_report_that_left_a_default_out_and_names_what_differs():
    import copy

    a, b, data = two_reports()
    old = copy.deepcopy(b)
    del old["config"]["nifa"]["directional_gaps"]  # written before the field existed (default False)
    old["config"]["device"] = "cuda:0"  # another device, same setup
    assert merge_reports([a, old])["seeds"] == [0, 1]
    other = copy.deepcopy(b)
    other["config"]["nifa"]["beta"] = 1.0
    with pytest.raises(ForetellError, match=r"config\.nifa\.beta"):
        merge_reports([a, other])
