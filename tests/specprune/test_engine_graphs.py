"""Runs of plain layers through ``LayerGraphs`` (CUDA graphs on a GPU; here the emulated backend, which
replays through the same static buffers): the same actions, MACs and token counts as the eager engine,
segments that never contain a layer where the policy scores or prunes, and clear errors off the GPU."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune.config import SpecPruneConfig
from foretell.specprune.engine import PruningPolicy, plain_segments
from foretell.specprune.graphs import LayerGraphs
from foretell.specprune.methods import build_method
from foretell.specprune.peers import FastVPolicy
from foretell.specprune.pruning import SpecPrunePolicy

from specprune_tiny import moved, one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)

COARSE = torch.tensor([0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0])


def _run(method: str, graphs, queries: int = 4, layers: int = 12, **kw):
    """Actions and records of ``queries`` queries on moving images (coarse mode after the controller's start)."""
    vla = tiny_vla(num_layers=layers)
    images, ids, proprio = tiny_inputs()
    if method.startswith("specprune"):  # the eager engine's token counts (graphs would round them up)
        kw = {"config": SpecPruneConfig(kept_multiple=1), **kw}
    h = build_method(method, vla, cuda_graphs=graphs, **kw)
    for _ in range(12):
        h.observe(images, COARSE)
    outs = []
    for q in range(queries):
        cur = moved(images, patch=(q % 3, 1 + q % 2))
        outs.append(h.predict_action(cur, ids, proprio))
        h.observe(cur, COARSE)
    stats, recs = h.stats(), list(h.records)
    h.remove()
    return outs, recs, stats


@pytest.mark.parametrize("method,kw", [("full", {}), ("specprune", {}), ("fastv", {"token_budget": 6}),
                                       ("random", {"token_budget": 6}), ("specprune_no_global", {})])
def test_graphed_segments_give_the_eager_actions(method, kw):
    eager, eager_recs, _ = _run(method, None, **kw)
    graphs = LayerGraphs(backend="emulate", min_hits=1)
    graphed, recs, stats = _run(method, graphs, **kw)
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)
    assert [r.macs for r in recs] == [r.macs for r in eager_recs]
    assert [r.visual_per_layer for r in recs] == [r.visual_per_layer for r in eager_recs]
    assert stats["cuda_graphs"]["replays"] > 0 and stats["cuda_graphs"]["eager"] == 0


def test_inputs_are_copied_into_the_static_buffers_every_query():
    """Different images, same kept-token counts: a replay that kept the captured inputs would repeat
    the first query's actions."""
    graphs = LayerGraphs(backend="emulate", min_hits=1)
    outs, recs, stats = _run("fastv", graphs, queries=3, token_budget=6)
    assert len({tuple(r.visual_per_layer) for r in recs}) == 1  # same shapes, so the same graphs
    assert stats["cuda_graphs"]["captures"] == stats["cuda_graphs"]["kept"] == 2  # FastV: layers 0-1 and 3-11
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])


def test_a_segment_is_captured_on_its_second_sight_and_replayed_after():
    graphs = LayerGraphs(backend="emulate", min_hits=2)
    _, _, stats = _run("full", graphs, queries=3)
    # full: one segment over all 12 layers; query 1 eager, query 2 captures and replays, query 3 replays
    assert stats["cuda_graphs"].pop("capture_seconds") > 0
    assert stats["cuda_graphs"] == {"eager": 1, "captures": 1, "replays": 2, "kept": 1}
    assert graphs.kept == 0  # remove() drops the graphs


def test_only_max_graphs_segments_are_kept():
    graphs = LayerGraphs(backend="emulate", min_hits=1, max_graphs=1)
    eager, _, _ = _run("specprune", None, layers=32)
    graphed, _, _ = _run("specprune", graphs, layers=32)  # coarse mode: 6 segments
    assert all(torch.equal(a, b) for a, b in zip(eager, graphed))
    assert graphs.counts["captures"] > 1  # segments pushed each other out and were captured again


@pytest.mark.parametrize("layers", [5, 12, 32])
@pytest.mark.parametrize("fine", [False, True])
def test_segments_hold_no_layer_where_the_policy_scores_or_prunes(layers, fine):
    vla = tiny_vla(num_layers=layers)
    policy = SpecPrunePolicy(SpecPruneConfig(), build_method("full", vla).adapter, layers)
    policy._fine = fine  # what begin() sets from the controller's mode
    segments = plain_segments(policy, layers)
    inside = {i for a, b in segments.items() for i in range(a, b)}
    assert all(not policy.scores_at(i) and not policy.prunes_after(i) for i in inside)
    assert len(segments) == {(5, False): 0, (5, True): 1, (12, False): 1, (12, True): 1, (32, False): 6, (32, True): 1}[layers, fine]
    for i in set(range(layers)) - inside:  # a plain layer outside only when its run is shorter than 2
        if policy.plain_layer(i):
            assert not (i > 0 and policy.plain_layer(i - 1)) and not (i + 1 < layers and policy.plain_layer(i + 1))
    assert plain_segments(PruningPolicy(), layers) == {0: layers}
    assert plain_segments(FastVPolicy(4, 2), layers) == ({0: 2, 3: layers} if layers > 4 else {0: 2})


def test_a_key_value_cache_policy_runs_eagerly():
    graphs = LayerGraphs(backend="emulate", min_hits=1)
    eager, _, _ = _run("vla_cache", None, token_budget=6)
    graphed, _, stats = _run("vla_cache", graphs, token_budget=6)
    assert all(torch.equal(a, b) for a, b in zip(eager, graphed))
    assert stats["cuda_graphs"] == {"eager": 0, "captures": 0, "replays": 0, "kept": 0, "capture_seconds": 0.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors off the GPU")
def test_cuda_graphs_off_the_gpu_is_a_clear_error():
    vla = tiny_vla()
    with pytest.raises(ForetellError, match="cuda_graphs needs a CUDA GPU"):
        build_method("specprune", vla, config=SpecPruneConfig(cuda_graphs=True))
    with pytest.raises(ForetellError, match="cuda_graphs needs a CUDA GPU"):
        build_method("fastv", vla, cuda_graphs=True)


def test_bad_graph_settings_are_clear_errors():
    with pytest.raises(ForetellError, match="accepted: cuda, emulate"):
        LayerGraphs(backend="cpu")
    with pytest.raises(ForetellError, match="integers >= 1"):
        LayerGraphs(backend="emulate", min_hits=0)


@pytest.mark.parametrize("multiple", [4, 16])
def test_kept_multiple_rounds_the_static_count_up_with_the_best_remaining_patches(multiple):
    """Every query keeps a multiple of ``kept_multiple`` visual tokens after the static stage (or all
    the rows there were), a superset of what the unrounded policy keeps."""
    vla = tiny_vla(num_layers=12, image_size=64)  # 2 x 64 patches
    images, ids, proprio = tiny_inputs(size=64)
    handles = []
    for m in (1, multiple):  # removed handles still predict (as the eval alternates methods)
        # no global set: it carries the previous query's selection over, so the two would drift apart
        handles.append(build_method("specprune", vla, config=SpecPruneConfig(kept_multiple=m, use_global=False)))
        handles[-1].remove()
    base, rounded = handles
    counts = []
    for h in (base, rounded):
        for _ in range(12):
            h.observe(images, COARSE)
    for q in range(4):
        cur = moved(images, patch=(q, 2 * q))
        kept = []
        for h in (base, rounded):
            h.predict_action(cur, ids, proprio)
            h.observe(cur, COARSE)
            kept.append(h.policy.kept.clone())
        # (unrounded count, rounded count, visual rows layer 1 saw: the most it can keep)
        counts.append((int(kept[0].sum()), h.records[-1].visual_kept, h.records[-1].visual_per_layer[1]))
        assert bool((kept[0] <= kept[1]).all())  # rounding only adds patches
    assert all((r % multiple == 0 or r == rows) and 0 <= r - b < multiple for b, r, rows in counts), counts
    assert any(r > b for b, r, _ in counts)  # the rounding did something on these inputs


def test_graphs_round_the_kept_count_by_default_and_explicit_settings_win():
    vla = tiny_vla()
    graphs = LayerGraphs(backend="emulate")

    def multiple(**kw):
        h = build_method("specprune", vla, **kw)
        h.remove()
        return h.policy.cfg.kept_multiple

    assert multiple(cuda_graphs=graphs) == 16 and multiple() == 1
    assert multiple(cuda_graphs=graphs, config=SpecPruneConfig(kept_multiple=1)) == 1


class _DropHalfAfter3(PruningPolicy):
    """Prunes in ``after_layer`` without declaring it in ``prunes_after`` (the eager engine allows it)."""

    def after_layer(self, layer_idx, state, probs, rows):
        if layer_idx != 3:
            return None
        vis = state.visual_rows()
        return state.keep_visual_rows(vis[: vis.numel() // 2])


def test_a_policy_that_does_not_declare_where_it_acts_is_never_graphed():
    from foretell.specprune.adapter import OFTStyleAdapter
    from foretell.specprune.handle import PruningHandle

    vla = tiny_vla(num_layers=8)
    images, ids, proprio = tiny_inputs()
    out = []
    for graphs in (None, LayerGraphs(backend="emulate", min_hits=1)):
        h = PruningHandle(OFTStyleAdapter(vla), _DropHalfAfter3(), "custom", graphs)
        out.append((h.predict_action(images, ids, proprio), h.records[-1].visual_per_layer))
        h.remove()
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == out[1][1]
    assert out[0][1][4] < out[0][1][3]  # the drop after layer 3 happened in both
    assert not any(_DropHalfAfter3().plain_layer(i) for i in range(8))


def test_one_layer_graphs_shared_by_two_models_keeps_their_graphs_apart():
    graphs = LayerGraphs(backend="emulate", min_hits=1)
    images, ids, proprio = tiny_inputs()
    vlas = [tiny_vla(seed=seed, num_layers=6) for seed in (0, 1)]
    want = [v.predict_action(images, ids, proprio) for v in vlas]
    handles = [build_method("full", v, cuda_graphs=graphs) for v in vlas]  # both held: nothing cleared
    got = [h.predict_action(images, ids, proprio) for h in handles]
    assert graphs.kept == 2 and not torch.equal(want[0], want[1])
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    for h in handles:
        h.remove()


@pytest.mark.parametrize("kwargs, message", [
    ({"min_hits": "x"}, "must both be integers >= 1"), ({"min_hits": 1.7}, "must both be integers >= 1"),
    ({"max_graphs": None}, "must both be integers >= 1")])
def test_graph_settings_must_be_integers(kwargs, message):
    with pytest.raises(ForetellError, match=message):
        LayerGraphs(backend="emulate", **kwargs)


@pytest.mark.parametrize("changes, message", [({"cuda_graphs": "no"}, "must be true or false"),
                                              ({"kept_multiple": True}, "must be an integer or null"),
                                              ({"kept_multiple": 0}, "must be a positive integer")])
def test_config_types_for_graphs(changes, message):
    with pytest.raises(ForetellError, match=message):
        SpecPruneConfig(**changes)
