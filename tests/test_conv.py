"""models/conv.py: the im2col weight gradient is the convolution's weight gradient; the measured
Conv2d matches nn.Conv2d, measures each shape once, falls back where it does not apply, and a
checkpoint carries its choices into the resumed run."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import siamdyn.models.conv as conv
from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.methods import SiameseMethod
from siamdyn.train import train
from tests.conftest import TINY

NHWC = torch.channels_last
SHAPES = [  # (in, out, kernel, stride, padding, input side): ResNet's 3x3 and 1x1 shortcut, odd sides
    (3, 5, 3, 1, 1, 7), (4, 6, 3, 2, 1, 7), (4, 6, 1, 2, 0, 8), (2, 3, (3, 1), (2, 1), (1, 0), 9)]


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.setattr(conv, "_choices", {})
    monkeypatch.setattr(conv, "_trials", {})


def pair(i, o, k, stride, pad, side, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Conv2d(i, o, k, stride, pad, bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=dtype))
    x = torch.randn(6, i, side, side, generator=g, dtype=dtype).contiguous(memory_format=NHWC)
    return layer, x


@pytest.mark.parametrize("shape", SHAPES)
def test_im2col_weight_gradient_is_the_convolution_weight_gradient(shape):
    layer, x = pair(*shape)
    y = layer(x)
    g = torch.randn_like(y).contiguous(memory_format=NHWC)
    (expected,) = torch.autograd.grad(y, layer.weight, g)
    got = conv.weight_grad_im2col(x, g, layer.kernel_size, layer.stride, layer.padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("choice", [conv.NATIVE, conv.IM2COL])
def test_the_function_passes_gradcheck_and_double_backward_with_either_kernel(choice):
    layer, x = pair(3, 4, 3, 2, 1, 5)
    x.requires_grad_()
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    key = conv.shape_key(x, layer.weight, dict(stride=[2, 2], padding=[1, 1]))
    conv.restore_kernel_choices({key: choice})

    def f(x, w, b):
        return conv._ConvWeightGradChoice.apply(x, w, b, (2, 2), (1, 1))
    args = (x, layer.weight.detach().requires_grad_(), bias)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)
    assert conv.kernel_choices() == {key: choice}  # forced, so never measured


def bf16_step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.backward(g.to(y.dtype))
    return y, x.grad, layer.weight.grad


@pytest.mark.parametrize("choice", [conv.NATIVE, conv.IM2COL])
def test_bf16_layer_matches_nn_conv2d(choice):
    ref, x = pair(8, 16, 3, 2, 1, 9, dtype=torch.float32)
    ours = conv.Conv2d(8, 16, 3, 2, 1, bias=False)
    ours.load_state_dict(ref.state_dict())  # same parameters and state dict keys
    ref.to(memory_format=NHWC), ours.to(memory_format=NHWC)
    g = torch.randn(6, 16, 5, 5).contiguous(memory_format=NHWC)
    y_ref, dx_ref, dw_ref = bf16_step(ref, x, g)
    key = conv.shape_key(x.bfloat16(), ours.weight.bfloat16(), dict(stride=[2, 2], padding=[1, 1]))
    conv.restore_kernel_choices({key: choice})
    y, dx, dw = bf16_step(ours, x, g)
    assert y.dtype == torch.bfloat16 and dw.dtype == torch.float32
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)  # forward and input gradient: PyTorch's own
    exact = F.grad.conv2d_weight(x.double(), ref.weight.shape, g.to(torch.bfloat16).double(), 2, 1)
    for w in (dw, dw_ref):  # both round bf16 products summed in fp32 to bf16 once
        assert ((w.double() - exact).norm() / exact.norm()) < 4e-3


def test_the_first_backward_passes_alternate_the_kernels_then_keep_the_faster(monkeypatch):
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False).to(memory_format=NHWC)
    x, g = torch.randn(4, 4, 6, 6).contiguous(memory_format=NHWC), torch.randn(4, 8, 6, 6)
    calls = []
    real = conv._weight_grad
    monkeypatch.setattr(conv, "_weight_grad", lambda kernel, *a: calls.append(kernel) or real(kernel, *a))
    trial_calls = 2 * (conv.TRIALS + 1)
    for _ in range(trial_calls - 1):
        bf16_step(layer, x, g)
    assert calls == [conv.NATIVE, conv.IM2COL] * conv.TRIALS + [conv.NATIVE] and conv.kernel_choices() == {}
    bf16_step(layer, x, g)
    (key, choice), = conv.kernel_choices().items()
    assert key.startswith("bfloat16 x4x4x6x6 w8x4x3x3 s11 p11 t") and choice in (conv.NATIVE, conv.IM2COL)
    for _ in range(3):
        bf16_step(layer, x, g)
    assert calls[trial_calls:] == [choice] * 3 and conv._trials == {}


@pytest.mark.parametrize("case", ["fp32", "nchw", "no_grad", "not_measured", "dilated"])
def test_where_it_does_not_apply_it_is_nn_conv2d_and_measures_nothing(case):
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False, dilation=2 if case == "dilated" else 1,
                        measured=case != "not_measured")
    x = torch.randn(4, 4, 6, 6)
    x = x if case == "nchw" else x.contiguous(memory_format=NHWC)
    ref = nn.Conv2d(4, 8, 3, 1, 1, bias=False, dilation=layer.dilation)
    ref.load_state_dict(layer.state_dict())
    with torch.set_grad_enabled(case != "no_grad"), torch.autocast("cpu", torch.bfloat16, enabled=case != "fp32"):
        y, y_ref = layer(x), ref(x)
    if case != "no_grad":
        y.float().sum().backward()
    assert torch.equal(y, y_ref) and conv.kernel_choices() == {}


def test_config_turns_the_measurement_off():
    def measured(**kw) -> set:
        model = SiameseMethod(Config(**{**TINY, **kw}))
        return {m.measured for m in model.backbone.modules() if isinstance(m, conv.Conv2d)}
    assert measured() == {True}
    assert measured(conv_weight_grad="torch") == {False}
    assert measured(deterministic=True) == {False}


def test_a_resumed_run_computes_with_the_kernels_it_was_started_with(tmp_path):
    cfg = Config.from_preset("simsiam", {**TINY, "precision": "bf16", "channels_last": "on", "max_steps": 3})
    train(cfg, str(tmp_path / "run"), progress=False)
    saved = Checkpoint.load_run(str(tmp_path / "run")).kernel_choices
    assert saved and set(saved.values()) <= {conv.NATIVE, conv.IM2COL}
    assert all(k.startswith("bfloat16 x32x") for k in saved)  # one per conv shape of the backbone
    flipped = {k: conv.IM2COL if v == conv.NATIVE else conv.NATIVE for k, v in saved.items()}
    conv._choices.clear()
    conv._choices.update(flipped)  # what another measurement might have said
    train(Config.from_preset("simsiam", {**TINY, "precision": "bf16", "channels_last": "on", "max_steps": 5}),
          str(tmp_path / "run"), resume=True, progress=False)
    assert conv.kernel_choices() == saved


def test_a_checkpoint_with_unknown_kernel_choices_is_refused():
    with pytest.raises(SiamdynError, match="kernel choices .* --overwrite"):
        conv.restore_kernel_choices({"bfloat16 x1": "winograd"})
    with pytest.raises(SiamdynError, match="kernel choices"):
        conv.restore_kernel_choices(["native"])
