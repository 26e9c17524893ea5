"""Merging parallel eval reports keeps each method's own-process speed-up and the peers' budget."""

import importlib.util
from pathlib import Path

import pytest

from foretell.core.errors import ForetellError

_spec = importlib.util.spec_from_file_location(
    "merge_eval", Path(__file__).resolve().parents[2] / "scripts" / "specprune" / "merge_eval.py")
merge_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_eval)


def _rep(methods, budget=None, baselines=False):
    r = {"episodes": 4, "seed": 1, "methods": {m: {"success_rate": s, "llm_latency_ms": ms} for m, (s, ms) in methods.items()},
         "speedup_vs_full": {m: {"llm_latency": methods["full"][1] / ms} for m, (s, ms) in methods.items()},
         "token_budget": budget}
    if baselines:
        r["baselines"] = {"blind": {"success_rate": 0.0}}
    return r


def test_merge_keeps_first_full_and_per_process_speedups():
    a = _rep({"full": (0.5, 10.0), "specprune": (0.5, 5.0)})
    b = _rep({"full": (0.25, 20.0), "fastv": (0.0, 10.0)}, budget=77, baselines=True)
    m = merge_eval.merge([a, b])
    assert set(m["methods"]) == {"full", "specprune", "fastv"}
    assert m["methods"]["full"]["llm_latency_ms"] == 10.0 and m["methods"]["full"]["process"] == 0
    assert m["speedup_vs_full"]["fastv"]["llm_latency"] == pytest.approx(2.0)
    assert m["token_budget"] == 77 and m["baselines"]["blind"]["success_rate"] == 0.0
    assert m["processes"][1]["full_reference"]["llm_latency_ms"] == 20.0


def test_merge_counts_layouts_solved_by_one_method_only():
    a = _rep({"full": (0.5, 10.0), "specprune": (0.75, 5.0)})
    b = _rep({"full": (0.5, 20.0), "fastv": (0.5, 10.0)}, budget=7)
    a["methods"]["specprune"]["per_episode_success"] = "1101"
    b["methods"]["fastv"]["per_episode_success"] = "0111"
    m = merge_eval.merge([a, b])
    assert m["paired_vs_specprune"] == {"fastv": {"reference_only": 1, "method_only": 1, "sign_test_p": 1.0}}


def test_paired_counts_sign_test_against_hand_computed_binomial():
    from foretell.specprune.eval import paired_counts

    methods = {"specprune": {"per_episode_success": "1" * 9 + "0" + "11"},
               "fastv": {"per_episode_success": "0" * 9 + "1" + "11"},
               "random": {"per_episode_success": "1" * 9 + "0" + "11"}}
    paired = paired_counts(methods)
    # 9 layouts for specprune, 1 for fastv: two-sided exact p = 2 * (C(10,0) + C(10,1)) / 2**10
    assert paired["fastv"] == {"reference_only": 9, "method_only": 1, "sign_test_p": pytest.approx(22 / 1024)}
    assert paired["random"] == {"reference_only": 0, "method_only": 0, "sign_test_p": 1.0}
    assert paired_counts({"fastv": {"per_episode_success": "1"}}) is None


def test_merge_refuses_different_layouts():
    a = _rep({"full": (0.5, 10.0)})
    b = dict(_rep({"full": (0.5, 10.0)}), seed=2)
    with pytest.raises(ForetellError, match="same episodes and seed"):
        merge_eval.merge([a, b])


def test_results_table_pairs_each_method_with_specprune():
    from foretell.specprune.eval import paired_counts, results_rows

    methods = {m: {"success_rate": s.count("1") / 4, "successes": s.count("1"), "episodes": 4, "llm_latency_ms": 1.0,
                   "e2e_latency_ms": 2.0, "visual_tokens_kept": 8.0, "llm_macs_fraction": 0.5,
                   "per_episode_success": s} for m, s in (("specprune", "1101"), ("fastv", "0111"))}
    report = {"methods": methods, "paired_vs_specprune": paired_counts(methods)}
    headers, rows = results_rows(report)
    assert headers[-1] == "solved by specprune only / this only (p)"
    assert rows[0][-1] is None and rows[1][-1] == "1 / 1 (p=1)"
    headers, rows = results_rows({"methods": {"fastv": methods["fastv"]}})
    assert "solved by specprune only / this only (p)" not in headers and len(rows[0]) == len(headers)
