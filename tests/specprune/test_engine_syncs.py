"""Host reads (GPU syncs) per pruned query, counted on the CPU with ``count_host_syncs``.

Every read of a device value stalls a GPU's launch queue; on a 7B backbone the engine's former
~19 reads per query ate most of what pruning saved. These tests pin the bound: SpecPrune reads the
device twice per query (the kept-token counts after layers 0 and 1; on the CPU also one frame
compare per view), independent of the number of layers and dynamic drops; FastV never reads.
"""

import pytest
import torch

import foretell.specprune.handle as handle_module
from foretell.specprune.config import SpecPruneConfig
from foretell.specprune.engine import PruningPolicy, rows_where, run_backbone
from foretell.specprune.frame_diff import FrameHistory, frame_back_on_device
from foretell.specprune.methods import build_method
from foretell.specprune.model import TokenLayout
from foretell.specprune.syncs import count_host_syncs

from specprune_tiny import Embedded, moved, one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)

COARSE = torch.tensor([0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0])
FINE = torch.zeros(7)


def _counted_query(monkeypatch, method: str, layers: int, action=COARSE, **kw):
    vla = tiny_vla(num_layers=layers)
    images, ids, proprio = tiny_inputs()
    h = build_method(method, vla, **kw)
    for _ in range(12):
        h.observe(images, action)
    cur = moved(images, patch=(1, 2))
    h.predict_action(cur, ids, proprio)
    h.observe(images, action)
    counter = count_host_syncs()

    def counted(*args, **kwargs):  # the engine's pass only: the tiny model validates its CPU inputs itself
        with counter:
            return run_backbone(*args, **kwargs)

    monkeypatch.setattr(handle_module, "run_backbone", counted)
    out = h.predict_action(cur, ids, proprio)
    monkeypatch.undo()
    rec = h.records[-1]
    h.remove()
    return counter, rec, out


@pytest.mark.parametrize("layers", [5, 12])
def test_specprune_coarse_reads_the_device_twice_per_query(monkeypatch, layers):
    counter, rec, _ = _counted_query(monkeypatch, "specprune", layers, config=SpecPruneConfig())
    per_layer = rec.visual_per_layer
    assert rec.mode == "coarse"
    assert len(set(per_layer[2:])) > 1, "the dynamic layer drops must have run for this bound to mean something"
    counts = dict(counter.counts)
    assert counts.pop("equal", 0) <= 2  # CPU only: the frame compare per view (on a GPU it is a device select)
    assert sum(counts.values()) <= 2, counter.counts


@pytest.mark.parametrize("changes", [{}, {"token_budget": 20}, {"rescore_layer1": False}, {"use_dynamic_layers": False}])
def test_specprune_variants_stay_within_the_bound(monkeypatch, changes):
    counter, rec, out = _counted_query(monkeypatch, "specprune", 8, config=SpecPruneConfig(**changes))
    counts = dict(counter.counts)
    counts.pop("equal", 0)
    assert sum(counts.values()) <= 2, (changes, counter.counts)
    assert torch.isfinite(out).all()


def test_specprune_fine_mode_and_fastv_bounds(monkeypatch):
    counter, rec, _ = _counted_query(monkeypatch, "specprune", 8, action=FINE, config=SpecPruneConfig())
    assert rec.mode == "fine"
    counts = dict(counter.counts)
    counts.pop("equal", 0)
    assert sum(counts.values()) <= 2, counter.counts
    counter, rec, _ = _counted_query(monkeypatch, "fastv", 8, token_budget=20)
    assert counter.total == 0, counter.counts
    assert rec.visual_per_layer[-1] == 20


def test_counter_sees_the_reads_it_claims():
    t = torch.arange(6)
    with count_host_syncs() as c:
        t.sum().item()
        t.tolist()
        bool(t[0] > 1)
        torch.nonzero(t > 2)
        t[t > 2]
        torch.equal(t, t)
        t[torch.tensor([1, 2])]  # integer index: no read
        torch.topk(t.float(), 2)
    assert c.counts == {"item": 1, "tolist": 1, "__bool__": 1, "nonzero": 1, "__getitem__": 1, "equal": 1}


def test_rows_where_with_a_known_count_equals_nonzero():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mask = torch.rand(300, generator=g) < 0.3
        assert torch.equal(rows_where(mask, int(mask.sum())), torch.nonzero(mask).flatten())
        assert torch.equal(rows_where(mask), torch.nonzero(mask).flatten())


def test_visual_rows_match_nonzero_after_gathers():
    emb = Embedded(tiny_vla())
    state = emb.state()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        vis = torch.nonzero(state.row_kinds >= 0).flatten()
        assert torch.equal(state.visual_rows(), vis)
        drop = vis[torch.randperm(vis.numel(), generator=g)[: vis.numel() // 3]]
        kept_vis = vis[~torch.isin(vis, drop)]
        keep = state.keep_rows_for(state.origin[kept_vis])
        assert torch.equal(keep, torch.nonzero(~torch.isin(torch.arange(state.origin.numel()), drop)).flatten())
        assert torch.equal(state.keep_visual_rows(kept_vis.flip(0)), keep)  # any order in, ascending out
        index = state.visual_index()
        assert isinstance(index, slice) and torch.equal(state.origin[index], state.origin[vis])
        state.gather(keep)


def test_visual_rows_on_a_layout_with_views_apart():
    lay = TokenLayout(views={"a": slice(1, 5), "b": slice(6, 10)}, proprio=slice(5, 6), instruction=slice(10, 12),
                      actions=slice(12, 14), length=15)
    emb = Embedded(tiny_vla())
    state = emb.state()
    from foretell.specprune.engine import token_kinds
    state.layout, state.kinds, state.origin = lay, token_kinds(lay), torch.arange(15)
    state.hidden = torch.zeros(1, 15, 4)
    assert torch.equal(state.visual_rows(), torch.tensor([1, 2, 3, 4, 6, 7, 8, 9]))
    assert torch.equal(state.visual_index(), state.visual_rows())
    assert torch.equal(state.keep_visual_rows(torch.tensor([8, 2])), torch.tensor([0, 2, 5, 8, 10, 11, 12, 13, 14]))


def _frames(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 8, 8, generator=g) for _ in range(n)]


@pytest.mark.parametrize("stored,gap", [(2, 1), (2, 3), (5, 2), (5, 5), (8, 6)])
@pytest.mark.parametrize("newest_is_current", [False, True])
def test_frame_back_on_device_matches_the_host_compare(stored, gap, newest_is_current):
    frames = _frames(stored)
    current = frames[-1].clone() if newest_is_current else torch.rand(3, 8, 8)
    hist = FrameHistory()
    for f in frames:
        hist.push({"v": f})
    want = hist.frame_back("v", current, gap)  # the CPU path: torch.equal on the host
    with count_host_syncs() as c:
        got = frame_back_on_device(list(hist.frames["v"]), current, gap)
    assert c.total == 0
    assert torch.equal(got, want)


class _DropsAnActionSlot(PruningPolicy):
    def prunes_after(self, layer_idx):
        return layer_idx == 0

    def after_layer(self, layer_idx, state, probs, rows):
        if layer_idx != 0:
            return None
        return torch.cat([torch.arange(state.layout.actions.start), torch.arange(state.layout.actions.start + 1, state.origin.numel())])


def test_a_policy_that_drops_an_action_slot_is_still_caught():
    from foretell.specprune.adapter import OFTStyleAdapter

    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    adapter = OFTStyleAdapter(vla)
    with torch.inference_mode():
        prep = adapter.prepare(images, ids, proprio)
        with pytest.raises(RuntimeError, match="action slots"):
            run_backbone(adapter, prep, _DropsAnActionSlot())


def test_fastv_runs_on_the_meta_device_without_reading_it():
    """``meta`` tensors have no values: any host read or CPU tensor mixed in would raise here."""
    vla = tiny_vla(num_layers=4).to("meta")
    images, ids, proprio = tiny_inputs()
    with build_method("fastv", vla, token_budget=10) as h:
        h.observe(images, COARSE)
        out = h.predict_action(images, ids, proprio)
        assert out.device.type == "meta" and h.records[-1].visual_per_layer[-1] == 10


def test_frame_back_on_device_with_meta_frames():
    frames = [f.to("meta") for f in _frames(3)]
    got = frame_back_on_device(frames, torch.empty(3, 8, 8, device="meta"), 2)
    assert got.device.type == "meta" and got.shape == (3, 8, 8)


def test_cached_aranges_built_under_inference_mode_still_serve_autograd():
    from foretell.specprune.engine import cached_arange

    with torch.inference_mode():
        rows = cached_arange(3, 9, "cpu")
    assert not rows.is_inference()
    x = torch.rand(10, requires_grad=True)
    x[rows].sum().backward()  # an inference tensor saved for backward would raise here
    assert x.grad[3:9].eq(1).all() and x.grad[:3].eq(0).all()
