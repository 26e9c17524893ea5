"""Per-view selections on the [views, patches] grid and the split layer's own scoring attention."""

import torch

from foretell.specprune.model import TokenLayout
from foretell.specprune.view_grid import ViewGrid

from specprune_tiny import Embedded, one_thread, tiny_vla  # noqa: F401 (autouse fixture)


def _layout() -> TokenLayout:
    # [BOS, view0 x 4, view1 x 4, proprio, instruction, action x 2]
    return TokenLayout(views={"a": slice(1, 5), "b": slice(5, 9)}, proprio=slice(9, 10), instruction=slice(10, 11),
                       actions=slice(11, 13), length=13)


def test_top_takes_each_views_own_k_and_skips_dropped_patches():
    grid = ViewGrid(_layout(), "cpu")
    assert grid.index.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    origin = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12])  # token 3 (view a, patch 2) was dropped
    row_scores = torch.tensor([9.0, 0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.8, 7.0, 7.0, 7.0, 7.0])
    scores = grid.scores(origin, row_scores)
    assert scores[0, 2] == float("-inf") and torch.equal(scores[1], row_scores[4:8])
    two_one, one_three = grid.top(scores, (2, 1), (1, 3))
    assert two_one.tolist() == [[False, True, False, True], [False, True, False, False]]
    assert one_three.tolist() == [[False, True, False, False], [False, True, True, True]]
    capped = grid.cap(two_one | one_three, scores, 2)  # best two over both views: 0.9 (b1), 0.8 (b3)
    assert capped.tolist() == [[False, False, False, False], [False, True, False, True]]
    rows = grid.keep_rows(origin, capped)
    assert origin[rows].tolist() == [0, 6, 8, 9, 10, 11, 12]  # every non-visual token, then the kept patches
    assert grid.origins(capped, 1).tolist() == [6, 8]


def test_split_layer_scores_equal_the_layers_eager_attention():
    """The split path scores from the RoPE-rotated q/k it uses for its own attention; that map must be
    the layer's attention weights (eager), row for row."""
    from foretell.specprune.engine import PruningPolicy, _run_layer_split

    x = Embedded(tiny_vla())
    layer = x.vla.backbone.layers[2]
    state, rows = x.state(), x.instruction_rows
    with torch.no_grad():
        eager = x.eager_attention(layer)
        probs, keep = _run_layer_split(layer, state, PruningPolicy(), 2, rows)
        full = layer(x.emb, attention_mask=None, position_ids=x.pos, position_embeddings=(x.cos, x.sin))
    assert keep is None and probs.shape == (4, len(rows), x.lay.length)
    assert torch.allclose(probs, eager[0][:, rows], atol=1e-6)
    assert torch.equal(state.hidden, full)  # nothing dropped: bit-identical to the transformers layer
