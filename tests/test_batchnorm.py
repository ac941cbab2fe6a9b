"""models/batchnorm.py: the channels_last float32 BatchNorm2d is exact, and otherwise it is
nn.BatchNorm2d (same outputs, gradients, running statistics, state dict, errors)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import siamdyn.models.batchnorm as batchnorm
from siamdyn.models import ResNet18
from siamdyn.models.batchnorm import BatchNorm2d, uses_exact_statistics

NHWC = torch.channels_last


def relative_error(a: torch.Tensor, reference: torch.Tensor) -> float:
    return ((a.double() - reference).norm() / reference.norm()).item()


def batch(offset: float = 0.0, shape=(256, 16, 14, 14), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + offset,
            torch.randn(shape, generator=g, dtype=torch.float64))


def forward_backward(bn: nn.Module, x: torch.Tensor, grad_y: torch.Tensor, dtype=torch.float32, fmt=NHWC):
    x = x.detach().to(dtype).contiguous(memory_format=fmt).requires_grad_()
    y = bn(x)
    y.backward(grad_y.to(dtype).contiguous(memory_format=fmt))
    return y, x.grad


@pytest.mark.parametrize("offset", [0.0, 10.0])
def test_float32_channels_last_statistics_are_as_exact_as_nchw(offset):
    x, grad_y = batch(offset)
    ref = nn.BatchNorm2d(16).double()
    ref_y, ref_dx = forward_backward(ref, x, grad_y, torch.float64, torch.contiguous_format)
    nchw_y, nchw_dx = forward_backward(nn.BatchNorm2d(16), x, grad_y, fmt=torch.contiguous_format)
    ours = BatchNorm2d(16)
    y, dx = forward_backward(ours, x, grad_y)
    assert uses_exact_statistics(x.float().contiguous(memory_format=NHWC))
    # Within 3× of PyTorch's NCHW kernel (and at the float32 rounding level, ~1e-7 relative).
    assert relative_error(y, ref_y) <= 3 * relative_error(nchw_y, ref_y) + 1e-7
    assert relative_error(dx, ref_dx) <= 3 * relative_error(nchw_dx, ref_dx) + 1e-7
    assert relative_error(ours.running_var, ref.running_var) < 1e-6
    assert y.is_contiguous(memory_format=NHWC) and dx.is_contiguous(memory_format=NHWC)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}])
def test_it_is_nn_batchnorm2d_in_everything_but_rounding(kwargs):
    ours, theirs = BatchNorm2d(16, **kwargs), nn.BatchNorm2d(16, **kwargs).double()
    if ours.affine:  # non-trivial affine parameters, the same in both
        with torch.no_grad():
            for a, b in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
                a.uniform_(0.5, 1.5)
                b.copy_(a)
    for seed in range(3):  # three steps: the running statistics' average over steps
        x, grad_y = batch(1.0, (64, 16, 7, 7), seed)
        y, dx = forward_backward(ours, x, grad_y)
        y_ref, dx_ref = forward_backward(theirs, x, grad_y, torch.float64, torch.contiguous_format)
        assert relative_error(y, y_ref) < 1e-6 and relative_error(dx, dx_ref) < 1e-5
    for name, value in theirs.state_dict().items():
        assert torch.allclose(ours.state_dict()[name].double(), value.double(), rtol=1e-5, atol=1e-7), name
    if ours.affine:
        assert torch.allclose(ours.weight.grad.double(), theirs.weight.grad, rtol=1e-4)
        assert torch.allclose(ours.bias.grad.double(), theirs.bias.grad, rtol=1e-4)
    ours.eval()
    theirs.float().eval()
    x, _ = batch(1.0, (8, 16, 7, 7), 9)
    x = x.float().contiguous(memory_format=NHWC)
    assert torch.allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-6)  # eval mode: running statistics


def test_the_exact_path_runs_only_where_pytorchs_kernel_is_inexact(monkeypatch):
    calls = []
    statistics = batchnorm.channel_statistics
    monkeypatch.setattr(batchnorm, "channel_statistics", lambda x: calls.append(x.shape) or statistics(x))
    bn = BatchNorm2d(8)
    x = torch.randn(4, 8, 5, 5)
    bn(x.contiguous(memory_format=NHWC))
    assert len(calls) == 1
    bn(x)  # NCHW
    BatchNorm2d(8).double()(x.double().contiguous(memory_format=NHWC))  # float64 sums are exact enough
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bn(x.bfloat16().contiguous(memory_format=NHWC))  # bf16: PyTorch's kernel, rounding is bf16's
    bn.eval()
    bn(x.contiguous(memory_format=NHWC))  # running statistics, nothing to sum
    assert len(calls) == 1


def test_one_value_per_channel_is_the_same_error():
    # (1, C, 1, 1) is contiguous in both layouts, so it takes nn.BatchNorm2d's path and check.
    x = torch.randn(1, 4, 1, 1).contiguous(memory_format=NHWC)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(4)(x)


def test_frozen_weights_inputs_without_gradient_and_fp32_under_autocast():
    x, grad_y = batch(1.0, (32, 8, 6, 6))
    x = x.float().contiguous(memory_format=NHWC)
    reference = nn.BatchNorm2d(8)(x.contiguous())
    frozen = BatchNorm2d(8).requires_grad_(False)
    y = frozen(x.requires_grad_())
    y.backward(grad_y.float().contiguous(memory_format=NHWC))
    assert x.grad is not None and frozen.weight.grad is None
    trained = BatchNorm2d(8)
    trained(x.detach()).backward(grad_y.float().contiguous(memory_format=NHWC))  # only the affine parameters
    assert trained.weight.grad is not None and trained.bias.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an fp32 input stays fp32 and exact
        y = BatchNorm2d(8)(x.detach())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.contiguous(), reference, rtol=1e-5, atol=1e-5)


def test_state_dicts_load_both_ways_and_the_resnet_uses_it():
    ours, theirs = BatchNorm2d(8), nn.BatchNorm2d(8)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    kinds = {type(m) for m in ResNet18(width=4, exact_batchnorm=True).modules() if isinstance(m, nn.BatchNorm2d)}
    assert kinds == {BatchNorm2d}
    assert isinstance(nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(BatchNorm2d(4)))[0], nn.SyncBatchNorm)


def test_double_backward_is_refused_with_a_clear_error():
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=NHWC).requires_grad_()
    y = BatchNorm2d(8)(x)
    (grad,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
        grad.sum().backward()


def test_exact_batchnorm_is_opt_in_and_shares_the_checkpoint():
    from siamdyn.config import Config
    from siamdyn.methods import SiameseMethod
    kinds = lambda m: {type(x) for x in m.modules() if isinstance(x, nn.BatchNorm2d)}  # noqa: E731
    assert kinds(SiameseMethod(Config(backbone_width=4))) == {nn.BatchNorm2d}  # the default: PyTorch's kernel
    assert kinds(ResNet18(4)) == {nn.BatchNorm2d}
    exact = SiameseMethod(Config(backbone_width=4, exact_batchnorm=True))
    assert kinds(exact) == {BatchNorm2d}
    exact.load_state_dict(SiameseMethod(Config(backbone_width=4)).state_dict())  # the same checkpoint either way


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 64 * 1000 + 17])
def test_blocked_row_sum_is_exact_for_any_row_count(rows):
    g = torch.Generator().manual_seed(rows)
    m = torch.randn(rows, 16, generator=g, dtype=torch.float64) + 3.0
    reference = m.sum(0)
    ours = batchnorm.blocked_row_sum(m.float())
    assert ours.shape == (16,)
    # A few float32 roundings per column, whatever the row count; summed in order in float32
    # (as PyTorch's channels_last kernel does) the 64 017 rows are ~40× further off.
    error = ((ours.double() - reference).abs() / reference.abs()).max()
    assert error < 5e-7
    if rows > 64 * 1000:
        in_order = torch.from_numpy(np.add.accumulate(m.float().numpy(), axis=0, dtype=np.float32)[-1])
        assert error * 10 < ((in_order.double() - reference).abs() / reference.abs()).max()
