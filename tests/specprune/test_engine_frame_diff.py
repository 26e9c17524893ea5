"""Frame-difference rule on hand-made images, and the frame-gap formula."""

import torch

from foretell.specprune.config import SpecPruneConfig, frame_gap
from foretell.specprune.frame_diff import FrameHistory, patch_similarity, static_mask


def _image(seed=0):
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_similarity_per_patch_row_major():
    a = _image()
    b = a.clone()
    b[:, 0:8, 8:16] = torch.rand(3, 8, 8)  # patch (row 0, col 1) -> index 1
    b[:, 8:16, 0:8] *= 0.5  # patch (1, 0) -> index 2: darker but same direction (cosine 1)
    sim = patch_similarity(a, b, patch_size=8)
    assert sim.shape == (4,)
    assert torch.allclose(sim[[0, 2, 3]], torch.ones(3), atol=1e-6)
    assert sim[1] < 0.95


def test_static_mask_threshold_and_cap():
    sim = torch.tensor([1.0, 0.99, 0.98, 0.999, 0.5, 0.9995])
    assert static_mask(sim, 0.986, cap=10).tolist() == [True, True, False, True, False, True]
    # the cap keeps only the most similar of the patches that passed the threshold
    assert static_mask(sim, 0.986, cap=2).tolist() == [True, False, False, False, False, True]
    assert not static_mask(sim, 0.986, cap=0).any()
    assert not static_mask(torch.full((4,), 0.5), 0.986, cap=4).any()


def test_frame_gap_official_formula():
    cfg = SpecPruneConfig()
    assert frame_gap(0.0, cfg) == 6  # slow: compare with an older frame
    assert frame_gap(3.0, cfg) == 6  # int(-16/3*0.5 + 22/3) + 3 = int(4.67) + 3 = 7 -> 6
    assert frame_gap(6.0, cfg) == 5  # int(2.0) + 3
    assert frame_gap(9.0, cfg) == 3  # int(-0.67) + 3 = 0 + 3 (truncation toward zero)
    assert frame_gap(30.0, cfg) == 2  # fast: recent frame
    assert frame_gap(6.0, SpecPruneConfig(speed_scale=2.0)) == 2


def test_history_frame_back_skips_current_frame():
    hist = FrameHistory(max_frames=8)
    frames = [_image(i) for i in range(5)]
    assert hist.frame_back("third", frames[0], 2) is None
    for f in frames:
        hist.push({"third": f.unsqueeze(0)})
    assert torch.equal(hist.frame_back("third", frames[4], 2), frames[2])  # current is the newest stored
    assert torch.equal(hist.frame_back("third", _image(99), 2), frames[3])  # a new, unstored frame
    assert torch.equal(hist.frame_back("third", frames[4], 10), frames[0])  # fewer than T: oldest
    hist.reset_state()
    assert hist.frame_back("third", frames[4], 1) is None


def test_similarity_matches_unfold_cosine_and_black_patches_are_static():
    import torch.nn.functional as F

    a, b = _image(3).unsqueeze(0), _image(4).unsqueeze(0)
    ref = F.cosine_similarity(F.unfold(a, 8, stride=8), F.unfold(b, 8, stride=8), dim=1)[0]
    assert torch.allclose(patch_similarity(a[0], b[0], 8), ref, atol=1e-5)
    batch = patch_similarity(torch.cat([a, b]), torch.cat([b, a]), 8)
    assert batch.shape == (2, 4) and torch.allclose(batch[0], ref, atol=1e-5)
    black = torch.zeros(3, 16, 16)
    lit = black.clone()
    lit[:, :8, :8] = 0.5
    assert patch_similarity(black, black, 8).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert patch_similarity(lit, black, 8)[0] == 0.0  # a patch that lit up changed
