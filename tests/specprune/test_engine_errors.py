"""Bad inputs and impossible configs give one-line ForetellErrors."""

import pytest
import torch

from foretell.core.errors import ForetellError
from foretell.specprune import apply
from foretell.specprune.config import SpecPruneConfig

from specprune_tiny import one_thread, tiny_inputs, tiny_vla  # noqa: F401 (autouse fixture)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("changes", [
    dict(use_frame_diff=False, topk_coarse=(0.0, 0.0), use_global=False),  # keeps zero tokens
    dict(static_cap_coarse=1.0, topk_coarse=(0.0,), use_global=False),  # can keep zero tokens
    dict(drop_keep_fraction=0.0),
    dict(token_budget=0),
    dict(similarity_threshold=1.5),
    dict(topk_fine=(2.0, 0.1)),
    dict(frame_gap_min=4, frame_gap_max=2),
])
def test_bad_configs(changes):
    with pytest.raises(ForetellError) as err:
        SpecPruneConfig(**changes)
    _one_line(err)


def test_config_must_fit_the_model():
    vla = tiny_vla()  # 5 layers, 32 visual tokens
    with pytest.raises(ForetellError, match="out of range"):
        apply(vla, SpecPruneConfig(drop_layers=(3, 9)))
    with pytest.raises(ForetellError, match="exceeds"):
        apply(vla, SpecPruneConfig(token_budget=40))
    with pytest.raises(ForetellError, match="SpecPruneConfig"):
        apply(vla, {"enabled": True})
    with pytest.raises(ForetellError, match="no built-in adapter"):
        apply(torch.nn.Linear(2, 2), SpecPruneConfig())
    assert vla._pruning_hook is None  # nothing was installed by the failed calls


def test_bad_inputs_while_applied():
    vla = tiny_vla()
    images, ids, proprio = tiny_inputs()
    h = apply(vla, SpecPruneConfig())
    bad_size = dict(images, third=torch.rand(1, 3, 40, 40))
    with pytest.raises(ForetellError, match=r"expected \[B, 3, 32, 32\]") as err:
        vla.predict_action(bad_size, ids, proprio)
    _one_line(err)
    with pytest.raises(ForetellError, match="missing camera view"):
        vla.predict_action({"third": images["third"]}, ids, proprio)
    with pytest.raises(ForetellError, match="missing camera view"):
        h.observe({"wrist": images["wrist"]}, torch.zeros(7))
    big, big_ids, big_p = tiny_inputs(batch=2)
    with pytest.raises(ForetellError, match="batch size 1"):
        vla.predict_action(big, big_ids, big_p)
    h.remove()


def test_libero_entry_point_explains_missing_packages():
    from foretell.specprune.libero import run_libero_eval

    with pytest.raises(ForetellError, match="unknown task suite"):
        run_libero_eval("ckpt", task_suite="libero_100")
    with pytest.raises(ForetellError, match="unknown method"):
        run_libero_eval("ckpt", methods=("full", "fast"))
    with pytest.raises(ForetellError, match="LIBERO and OpenVLA-OFT packages") as err:
        run_libero_eval("ckpt")
    _one_line(err)


def test_drop_layers_must_follow_the_static_stage():
    vla = tiny_vla()
    with pytest.raises(ForetellError, match=r"drop layers in \[3, 4\]"):
        apply(vla, SpecPruneConfig(drop_layers=(2,)))
    h = apply(vla, SpecPruneConfig(drop_layers=(2,), rescore_layer1=False))  # no layer-1 stage: 2 is fine
    h.remove()
    assert SpecPruneConfig().resolve_layers(6) == ((0, 1, 2), (3, 4, 5))
    assert SpecPruneConfig().resolve_layers(32) == ((0, 1, 12), (5, 10, 15, 20, 25))


def test_config_takes_numpy_numbers_as_plain_ones():
    import numpy as np

    c = SpecPruneConfig(token_budget=np.int64(80), similarity_threshold=np.float32(0.5), topk_coarse=np.array([0.1, 0.05]))
    assert type(c.token_budget) is int and type(c.similarity_threshold) is float and c.topk_coarse == (0.1, 0.05)
