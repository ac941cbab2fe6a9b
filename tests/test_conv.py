"""models/conv.py: the im2col weight gradient is the convolution's weight gradient; the measured
Conv2d matches nn.Conv2d, measures each shape once, falls back where it does not apply, and a
checkpoint carries its choices into the resumed run."""
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import siamdyn.models.conv as conv
from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
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
    monkeypatch.setattr(conv, "_started", {})


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
    used = []
    real = conv.weight_grad
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv, "weight_grad", lambda kernel, *a: used.append(kernel) or real(kernel, *a))
        y, dx, dw = bf16_step(ours, x, g)
    assert used == [choice] and conv.kernel_choices() == {key: choice}
    assert y.dtype == torch.bfloat16 and dw.dtype == torch.float32
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)  # forward and input gradient: PyTorch's own
    exact = F.grad.conv2d_weight(x.double(), ref.weight.shape, g.to(torch.bfloat16).double(), 2, 1)
    for w in (dw, dw_ref):  # both round bf16 products summed in fp32 to bf16 once
        assert ((w.double() - exact).norm() / exact.norm()) < 4e-3


class FakeClock:
    """conv's clock, advanced by each kernel call by the time the test gives that kernel."""

    def __init__(self, seconds):
        self.now, self.seconds, self.calls = 0.0, seconds, []

    def perf_counter(self) -> float:
        return self.now

    def kernel(self, real):
        def timed(kernel, *args):
            self.calls.append(kernel)
            self.now += self.seconds(kernel, self.calls.count(kernel))
            return real(kernel, *args)
        return timed


SECONDS = {  # seconds of each kernel's n-th call (the first is the untimed warm-up), and the kernel kept
    "im2col 5 % faster": ({conv.NATIVE: [100, 1, 1, 1], conv.IM2COL: [100, 0.95, 0.95, 0.95]}, conv.NATIVE),
    "im2col 20 % faster": ({conv.NATIVE: [100, 1, 1, 1], conv.IM2COL: [100, 0.8, 0.8, 0.8]}, conv.IM2COL),
    # counting oneDNN's slow warm-up would lift its median to 1.1 s and pick im2col
    "warm-up not counted": ({conv.NATIVE: [100, 0.8, 1.0, 1.2], conv.IM2COL: [0.01, 0.95, 0.95, 0.95]}, conv.NATIVE),
}


@pytest.mark.parametrize("case", SECONDS)
def test_the_first_backward_passes_alternate_the_kernels_then_keep_the_faster(monkeypatch, case):
    seconds, expected = SECONDS[case]
    clock = FakeClock(lambda kernel, n: seconds[kernel][min(n, 4) - 1])
    monkeypatch.setattr(conv, "time", clock)
    monkeypatch.setattr(conv, "weight_grad", clock.kernel(conv.weight_grad))
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False).to(memory_format=NHWC)
    x, g = torch.randn(4, 4, 6, 6).contiguous(memory_format=NHWC), torch.randn(4, 8, 6, 6)
    trial_calls = 2 * (conv.TRIALS + 1)
    for _ in range(trial_calls - 1):
        bf16_step(layer, x, g)
    assert clock.calls == [conv.NATIVE, conv.IM2COL] * conv.TRIALS + [conv.NATIVE] and conv.kernel_choices() == {}
    bf16_step(layer, x, g)
    key = "bfloat16 x4x4x6x6 w8x4x3x3 s1x1 p1x1 t" + str(torch.get_num_threads())
    assert conv.kernel_choices() == {key: expected} and conv._trials == {}
    for _ in range(3):
        bf16_step(layer, x, g)
    assert clock.calls[trial_calls:] == [expected] * 3


def test_an_unfolded_input_over_the_cap_is_never_tried(monkeypatch):
    monkeypatch.setattr(conv, "IM2COL_MAX_BYTES", 4 * 8 * 8 * 9 * 4 * 2 - 1)  # one byte under this layer's
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False).to(memory_format=NHWC)
    bf16_step(layer, torch.randn(4, 4, 8, 8).contiguous(memory_format=NHWC), torch.randn(4, 8, 8, 8))
    assert list(conv.kernel_choices().values()) == [conv.NATIVE] and conv._trials == {}


FALLBACKS = ["fp32", "nchw", "no_grad", "not_measured", "dilated", "same_padding", "float64_under_autocast",
             "deterministic", "forward_ad"]


@pytest.mark.parametrize("case", FALLBACKS)
def test_where_it_does_not_apply_it_is_nn_conv2d_and_measures_nothing(case, monkeypatch):
    layer = conv.Conv2d(4, 8, 3, 1, "same" if case == "same_padding" else 1, bias=True,
                        dilation=2 if case == "dilated" else 1, measured=case != "not_measured")
    ref = nn.Conv2d(4, 8, 3, 1, layer.padding, bias=True, dilation=layer.dilation)
    ref.load_state_dict(layer.state_dict())
    dtype = torch.float64 if case == "float64_under_autocast" else torch.float32
    layer, ref = layer.to(dtype), ref.to(dtype)
    x = torch.randn(4, 4, 6, 6, dtype=dtype)
    x = x if case == "nchw" else x.contiguous(memory_format=NHWC)
    if case == "deterministic":
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    with torch.set_grad_enabled(case != "no_grad"), torch.autocast("cpu", torch.bfloat16, enabled=case != "fp32"):
        if case == "forward_ad":
            import torch.autograd.forward_ad as fwAD
            with fwAD.dual_level():
                dual = fwAD.make_dual(x, torch.ones_like(x))
                y, y_ref = fwAD.unpack_dual(layer(dual)), fwAD.unpack_dual(ref(dual))
            assert torch.equal(y.tangent, y_ref.tangent)
            y, y_ref = y.primal, y_ref.primal
        else:
            y, y_ref = layer(x), ref(x)
    assert y.grad_fn is None or "ConvWeightGradChoice" not in type(y.grad_fn).__name__
    if case != "no_grad":
        y.float().sum().backward()
    assert torch.equal(y, y_ref) and conv.kernel_choices() == {} and conv._trials == {}


def test_a_bf16_input_to_an_fp32_layer_without_autocast_fails_as_in_nn_conv2d():
    layer = conv.Conv2d(4, 8, 3, 1, 1).to(memory_format=NHWC)
    x = torch.randn(2, 4, 5, 5, dtype=torch.bfloat16).contiguous(memory_format=NHWC)
    with pytest.raises(RuntimeError) as ours:
        layer(x)
    with pytest.raises(RuntimeError) as theirs:
        nn.Conv2d(4, 8, 3, 1, 1)(x)
    assert str(ours.value) == str(theirs.value)


def test_the_backbone_still_traces_with_fx_and_runs_under_torch_func():
    from siamdyn.models import ResNet18
    model = ResNet18(16, 1).to(memory_format=NHWC)
    torch.fx.symbolic_trace(model)  # a Proxy is not a tensor to measure
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=NHWC)
    model.eval()  # BatchNorm's running-statistics update is an in-place write torch.func refuses
    params = dict(model.named_parameters())
    with torch.autocast("cpu", torch.bfloat16):
        grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).float().sum())(params)
    assert set(grads) == set(params) and conv._trials == {}


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
    conv._trials.clear()  # as in a fresh process
    conv._started.clear()
    train(Config.from_preset("simsiam", {**TINY, "precision": "bf16", "channels_last": "on", "max_steps": 5}),
          str(tmp_path / "run"), resume=True, progress=False)
    assert {k: conv.kernel_choices()[k] for k in saved} == saved


def test_unknown_kernel_choices_in_a_checkpoint_are_measured_again_with_a_warning(capsys):
    conv.restore_kernel_choices({"bfloat16 x1": "winograd", "bfloat16 x2": conv.IM2COL})
    assert conv.kernel_choices() == {"bfloat16 x2": conv.IM2COL}
    assert "'winograd'" in capsys.readouterr().err
    conv.restore_kernel_choices(["native"])
    assert "not a mapping" in capsys.readouterr().err and conv.kernel_choices() == {"bfloat16 x2": conv.IM2COL}


def test_batched_backward_takes_pytorchs_kernels():
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False).to(memory_format=NHWC)
    ref = nn.Conv2d(4, 8, 3, 1, 1, bias=False)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=NHWC)
    grads = torch.randn(3, 2, 8, 5, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        y, y_ref = layer(x), ref(x)
    (gw,) = torch.autograd.grad(y, layer.weight, grads, is_grads_batched=True)
    (gw_ref,) = torch.autograd.grad(y_ref, ref.weight, grads, is_grads_batched=True)
    assert torch.equal(gw, gw_ref) and conv._trials == {}


def test_the_thread_count_is_part_of_the_shape_key():
    layer = conv.Conv2d(4, 8, 3, 1, 1, bias=False).to(memory_format=NHWC)
    x, g = torch.randn(4, 4, 6, 6).contiguous(memory_format=NHWC), torch.randn(4, 8, 6, 6)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            bf16_step(layer, x, g)
    finally:
        torch.set_num_threads(threads)
    assert sorted(k.split()[-1] for k in conv._trials) == ["t1", "t2"]


def test_trial_timings_that_end_out_of_order_keep_their_turns(monkeypatch):
    """Parallel views reach one shape from two threads: turn 1 (oneDNN's untimed warm-up) may end after
    turn 3 (its first timed call). The timing is kept with its turn, so the slow warm-up is still the one
    dropped: had the first call to end been dropped instead, oneDNN's median would read 1.2 s and im2col win."""
    seconds = {1: 5.0, 2: 0.01, 3: 1.0, 5: 1.0, 7: 1.2, 4: 0.95, 6: 0.95, 8: 0.95}  # turn → seconds
    local, started, release = threading.local(), threading.Event(), threading.Event()

    class ThreadClock:  # each thread's own clock, advanced by the seconds of the turn its call took
        def perf_counter(self) -> float:
            return getattr(local, "now", 0.0)

    turns = iter(range(1, 9))

    def kernel(kernel, *args):
        turn = next(turns)
        if turn == 1:
            started.set()
            assert release.wait(30)
        local.now = getattr(local, "now", 0.0) + seconds[turn]
        return torch.zeros(())

    monkeypatch.setattr(conv, "time", ThreadClock())
    monkeypatch.setattr(conv, "weight_grad", kernel)
    x, w, g = torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    geometry = conv.conv_geometry((1, 1), (1, 1))
    call = lambda: conv._trial_weight_grad("k", g, x, w, geometry)  # noqa: E731
    first = threading.Thread(target=call)
    first.start()
    assert started.wait(30)
    try:
        call(), call()  # turns 2 and 3 end while turn 1 still runs
    finally:
        release.set()
        first.join()
    assert sorted(conv._trials["k"][conv.NATIVE]) == [(1, 5.0), (3, 1.0)]
    for _ in range(5):
        call()
    assert conv.kernel_choices() == {"k": conv.NATIVE}  # im2col 0.95 s is not 10 % under oneDNN's 1.0 s
