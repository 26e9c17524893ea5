"""The oneDNN packed-weight linear kernels: same results as F.linear, reversible, never stale."""

import pytest
import torch
import torch.nn.functional as F

from tiny_models import AllTokensDraft, make_predictors, tiny_model
from foretell.core.errors import ForetellError
from foretell.specee.engine import SpecEE, SpecEEConfig
from foretell.specee.kernels import apply_packed_linears, linear_weight_bytes, onednn_available, resolve_linear_kernel

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN packed linear")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_matches_f_linear_for_any_row_count(bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 80, bias=bias)
    handle = apply_packed_linears(lin)
    for shape in [(1, 48), (5, 48), (33, 48), (1, 7, 48), (1, 0, 48)]:
        x = torch.randn(shape)
        with torch.no_grad():
            got = lin(x)
            torch.testing.assert_close(got, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
            assert got.shape == (*shape[:-1], 80)
            handle.enabled = False
            assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))      # switched off: the stock kernel
            handle.enabled = True


@needs_onednn
def test_packed_copy_follows_weight_changes_and_autograd_takes_the_stock_path():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    apply_packed_linears(lin)
    x = torch.randn(3, 16)
    with torch.no_grad():
        before = lin(x)
        lin.weight.mul_(2.0)                                     # in place: the packed copy must be rebuilt
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
        lin.weight = torch.nn.Parameter(torch.zeros(8, 16))      # replaced: rebuilt as well
        torch.testing.assert_close(lin(x), lin.bias.expand(3, 8))
    assert not torch.allclose(before, lin.bias.expand(3, 8))
    lin.weight = torch.nn.Parameter(torch.randn(8, 16))
    xg = torch.randn(3, 16, requires_grad=True)
    lin(xg).sum().backward()
    torch.testing.assert_close(xg.grad, lin.weight.detach().sum(0).expand(3, 16))
    assert lin.weight.grad is not None


@needs_onednn
def test_remove_restores_the_model_bit_for_bit():
    model = tiny_model()
    ids = torch.tensor([[5, 17, 99, 3]])
    with torch.no_grad():
        ref = model(ids).logits
        handle = apply_packed_linears(model)
        assert all("forward" in m.__dict__ for m in model.modules() if isinstance(m, torch.nn.Linear))
        packed = model(ids).logits
        handle.remove()
        again = model(ids).logits
    torch.testing.assert_close(packed, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(again, ref)
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_onednn
def test_specee_packs_once_and_restore_model_undoes_it():
    tiny = tiny_model(layers=2)
    lins = [m for m in tiny.modules() if isinstance(m, torch.nn.Linear)]
    a = SpecEE(tiny, make_predictors(tiny, k=4), AllTokensDraft(256, 4), SpecEEConfig(k=4))
    wrappers = [m.__dict__["forward"] for m in lins]
    b = SpecEE(tiny, make_predictors(tiny, k=4), AllTokensDraft(256, 4), SpecEEConfig(k=4))
    assert a.linear_kernel == "onednn" and a.kernels.modules == lins
    assert [m.__dict__["forward"] for m in lins] == wrappers     # already patched by a: not wrapped twice
    assert b.kernels.modules == lins                             # ... but b holds the patch as well
    x = torch.randn(3, 64)
    with torch.no_grad():
        b.kernels.enabled = False                                # b's "stock kernels" switch works on a's patch
        assert torch.equal(lins[0](x), F.linear(x, lins[0].weight, lins[0].bias))
        b.kernels.enabled = True
    a.restore_model()
    assert a.linear_kernel == "torch" and all("forward" in m.__dict__ for m in lins)   # b still uses it
    b.restore_model()
    assert not any("forward" in m.__dict__ for m in tiny.modules())
    c = SpecEE(tiny, make_predictors(tiny, k=4), AllTokensDraft(256, 4), SpecEEConfig(k=4, linear_kernel="torch"))
    assert c.kernels is None and not any("forward" in m.__dict__ for m in tiny.modules())


def test_kernel_choice_and_its_errors():
    cpu = torch.device("cpu")
    assert resolve_linear_kernel("torch", cpu, torch.float32) == "torch"
    assert resolve_linear_kernel("auto", cpu, torch.bfloat16) == "torch"
    assert resolve_linear_kernel("auto", torch.device("cuda"), torch.float32) == "torch"
    if onednn_available():
        assert resolve_linear_kernel("auto", cpu, torch.float32) == "onednn"
        # a packed copy larger than a quarter of the RAM is not made unasked (a 7B fp32 model on a laptop)
        assert resolve_linear_kernel("auto", cpu, torch.float32, weight_bytes=1 << 60) == "torch"
        assert resolve_linear_kernel("onednn", cpu, torch.float32, weight_bytes=1 << 60) == "onednn"
    with pytest.raises(ForetellError, match="float32 model on the CPU"):
        resolve_linear_kernel("onednn", cpu, torch.bfloat16)
    with pytest.raises(ForetellError, match="linear_kernel must be one of auto, onednn, torch, got 'mkl'"):
        resolve_linear_kernel("mkl", cpu, torch.float32)
    model = tiny_model(layers=2)
    lin = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_weight_bytes(model) == sum(m.weight.numel() * 4 for m in lin)
    with pytest.raises(ForetellError, match="linear_kernel must be one of"):
        SpecEE(model, make_predictors(model, k=4), None, SpecEEConfig(k=4, linear_kernel="fast"))
