"""Conv2d whose bf16 weight gradient on the CPU is one matrix product where that is measured faster.

The weight gradient of a convolution is one matmul over the unfolded input (im2col):

    dW[o, (kh, kw, i)] = Σ_{n, h, w} dY[n, h, w, o] · X_pad[n, h·s + kh, w·s + kw, i]
                       = (dY as rows)ᵀ @ im2col(X)

On the AMX CPU we measured, oneDNN's bf16 weight-gradient kernel took 1.0–4.9× the time of that
product on the small feature maps of ResNet stages 3–4 (14×14 → 7×7 and smaller), and less on the
large maps of the stem and stages 1–2 (docs/design.md §7, "Weight gradients"). So each shape's first backward
passes *are* the measurement (like cudnn.benchmark, but on the real step's cold caches, where
a repeated kernel on the same tensors favours im2col): they alternate the two kernels, each gives
the true gradient, and after `TRIALS` timed calls of each the faster is kept. The choices are
process-wide (`kernel_choices`), saved in the checkpoint and restored on resume, so a resumed run
computes with the kernels it was started with. The forward pass and the input gradient are
PyTorch's own; fp32, CUDA, NCHW input, torch.compile and the other cases `Conv2d._plain_conv` names
take `nn.Conv2d` unchanged.
"""
from __future__ import annotations

import statistics
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.errors import warn

NATIVE, IM2COL = "native", "im2col"
_choices: dict[str, str] = {}  # shape key → NATIVE or IM2COL, measured once per process (or restored)
_trials: dict[str, dict[str, list[tuple[int, float]]]] = {}  # shape key → (turn, seconds) of each kernel's calls
_started: dict[str, int] = {}  # shape key → trial calls started (whose turn is next)
_trial_lock = threading.Lock()
TRIALS = 3  # timed calls of each kernel per shape, after one untimed call each (oneDNN builds its primitive)
LOW_PRECISION = (torch.bfloat16,)  # where oneDNN's weight-gradient kernel lags the matmul
AUTOCAST_INPUTS = (torch.float32, torch.float16, torch.bfloat16)  # what CPU autocast casts to its dtype
IM2COL_MAX_BYTES = 256 * 2 ** 20  # a larger unfolded input is not tried: the trials must not run out of memory


def kernel_choices() -> dict[str, str]:
    """The weight-gradient kernel chosen for each convolution shape so far (for the checkpoint)."""
    return dict(_choices)


def restore_kernel_choices(choices: object) -> None:
    """Use the kernels a run was started with (from its checkpoint) instead of measuring again.
    They are a speed cache, not results: an entry that is not a known kernel is dropped (measured
    anew), with a one-line warning, rather than ending the run."""
    if not isinstance(choices, dict):
        warn(f"the checkpoint's convolution kernel choices are a {type(choices).__name__}, not a mapping; "
             "every shape is measured again")
        return
    valid = {k: v for k, v in choices.items() if isinstance(k, str) and v in (NATIVE, IM2COL)}
    bad = [(k, v) for k, v in choices.items() if k not in valid]
    if bad:
        warn(f"the checkpoint's convolution kernel choices hold {bad[0]!r}, not {NATIVE!r} or {IM2COL!r}; "
             "those shapes are measured again")
    _choices.update(valid)


def im2col_rows(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
    """(N·Ho·Wo, kh·kw·C) rows of an NCHW-shaped channels_last tensor, in (kh, kw, c) order: one
    strided view of the padded NHWC input, copied once."""
    n, c = x.shape[:2]
    xh = x.permute(0, 2, 3, 1)  # a view: channels_last memory is NHWC
    if padding != (0, 0):
        xh = F.pad(xh, (0, 0, padding[1], padding[1], padding[0], padding[0]))
    ho = (xh.shape[1] - kernel[0]) // stride[0] + 1
    wo = (xh.shape[2] - kernel[1]) // stride[1] + 1
    sn, sh, sw, sc = xh.stride()
    windows = xh.as_strided((n, ho, wo, kernel[0], kernel[1], c), (sn, sh * stride[0], sw * stride[1], sh, sw, sc))
    return windows.reshape(n * ho * wo, kernel[0] * kernel[1] * c)


def weight_grad_im2col(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int],
                       stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """dW = (dY as rows)ᵀ @ im2col(X), returned (O, C, kh, kw) in channels_last memory like the weight."""
    rows = grad_out.permute(0, 2, 3, 1).reshape(-1, grad_out.shape[1])
    grad = rows.t() @ im2col_rows(x, kernel, stride, padding)
    return grad.view(grad_out.shape[1], kernel[0], kernel[1], x.shape[1]).permute(0, 3, 1, 2)


def _native_grads(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conv: dict,
                  mask: list[bool]) -> tuple:
    return torch.ops.aten.convolution_backward(grad_out, x, weight, conv["bias_sizes"], conv["stride"],
                                               conv["padding"], [1, 1], False, [0, 0], 1, mask)


def conv_geometry(stride: tuple[int, ...] | list[int], padding: tuple[int, ...] | list[int],
                  bias: torch.Tensor | None = None) -> dict:
    """What the backward needs of a conv besides its tensors (aten.convolution_backward's arguments)."""
    return dict(stride=list(stride), padding=list(padding), bias_sizes=None if bias is None else list(bias.shape))


def weight_grad(kernel: str, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                conv: dict) -> torch.Tensor:
    """The weight gradient by `kernel` (NATIVE: oneDNN's; IM2COL: one matmul); `conv`: `conv_geometry`'s."""
    if kernel == NATIVE:
        return _native_grads(grad_out, x, weight, conv, [False, True, False])[1]
    return weight_grad_im2col(x, grad_out, tuple(weight.shape[2:]), tuple(conv["stride"]), tuple(conv["padding"]))


def im2col_bytes(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor) -> int:
    """Size of the unfolded input: one row of kh·kw·C per output pixel."""
    rows = grad_out.shape[0] * grad_out.shape[2] * grad_out.shape[3]
    return rows * weight.shape[1] * weight.shape[2] * weight.shape[3] * x.element_size()


def _trial_weight_grad(key: str, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       conv: dict) -> torch.Tensor:
    """One call of the kernel whose turn it is, timed; the shape's choice once both have `TRIALS`
    timed calls (im2col must be 10 % faster by the median to replace oneDNN). Thread-safe: parallel
    views (methods/parallel_views.py) reach the same shape from two threads at once, so the turn goes
    by calls started, and each call's timing is kept with its turn number (they may end out of order)."""
    if im2col_bytes(x, weight, grad_out) > IM2COL_MAX_BYTES:
        _choices[key] = NATIVE
        return weight_grad(NATIVE, grad_out, x, weight, conv)
    with _trial_lock:
        decided = _choices.get(key)  # by another thread since the caller looked
        turn = None if decided else _started.setdefault(key, 0) + 1
        if turn:
            _started[key] = turn
    if decided:
        return weight_grad(decided, grad_out, x, weight, conv)
    kernel = NATIVE if turn % 2 else IM2COL
    start = time.perf_counter()
    grad = weight_grad(kernel, grad_out, x, weight, conv)
    elapsed = time.perf_counter() - start
    with _trial_lock:
        if key in _choices:  # decided while this call ran
            return grad
        times = _trials.setdefault(key, {NATIVE: [], IM2COL: []})
        times[kernel].append((turn, elapsed))
        if min(map(len, times.values())) > TRIALS:
            # turns 1 and 2 are each kernel's untimed warm-up (oneDNN builds its primitive)
            native, im2col = (statistics.median(t for n, t in times[k] if n > 2) for k in (NATIVE, IM2COL))
            _choices[key] = IM2COL if im2col < 0.9 * native else NATIVE
            del _trials[key], _started[key]
    return grad


class _ConvWeightGradChoice(torch.autograd.Function):
    """F.conv2d forward; input gradient from PyTorch, weight gradient from the kernel chosen for the shape."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conv = conv_geometry(stride, padding, bias)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        try:  # a batched backward (is_grads_batched, jacobian's vectorize) cannot ask for a memory format
            batched = torch._C._are_functorch_transforms_active()
            grad_out = grad_out if batched else grad_out.contiguous(memory_format=torch.channels_last)
        except RuntimeError:
            batched = True
        if batched:  # PyTorch's kernels do it all, as nn.Conv2d's backward would
            return (*_native_grads(grad_out, x, weight, ctx.conv, [need_x, need_w, need_b]), None, None)
        grad_x, grad_w, grad_b = None, None, None
        if need_x or need_b:
            grad_x, _, grad_b = _native_grads(grad_out, x, weight, ctx.conv, [need_x, False, need_b])
        if need_w:
            key = shape_key(x, weight, ctx.conv)
            grad_w = (weight_grad(_choices[key], grad_out, x, weight, ctx.conv) if key in _choices
                      else _trial_weight_grad(key, grad_out, x, weight, ctx.conv))
        return grad_x, grad_w, grad_b, None, None


def shape_key(x: torch.Tensor, weight: torch.Tensor, conv: dict) -> str:
    """What the measured choice depends on: dtype, shapes, stride, padding, thread count."""
    return (f"{str(x.dtype).removeprefix('torch.')} x{'x'.join(map(str, x.shape))} w{'x'.join(map(str, weight.shape))}"
            f" s{conv['stride'][0]}x{conv['stride'][1]} p{conv['padding'][0]}x{conv['padding'][1]}"
            f" t{torch.get_num_threads()}")


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state dict) whose bf16 weight gradient on the CPU, for a
    channels_last input, comes from the faster of oneDNN and one im2col matmul, measured per shape
    (`measured=False`: always PyTorch's)."""

    def __init__(self, *args, measured: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.measured = measured

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._choice_dtype(x)
        if dtype is None:
            return super().forward(x)
        weight, bias = self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype)
        with torch.autocast("cpu", enabled=False):  # the casts above are autocast's own
            return _ConvWeightGradChoice.apply(x.to(dtype), weight, bias, self.stride, self.padding)

    def _choice_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The bf16 dtype this call computes in if it takes the measured path, else None (nn.Conv2d)."""
        if not self.measured or isinstance(x, torch.fx.Proxy):
            return None
        if torch.is_autocast_enabled("cpu"):  # autocast casts float inputs only, as here
            dtype = torch.get_autocast_dtype("cpu") if x.dtype in AUTOCAST_INPUTS else x.dtype
        else:  # without autocast nn.Conv2d needs matching dtypes (and says so when they differ)
            dtype = x.dtype if self.weight.dtype == x.dtype else None
        # the dtype first: an fp32 run (every AVX2-only machine) pays one check, not all of them
        return dtype if dtype in LOW_PRECISION and self._plain_conv(x) else None

    def _plain_conv(self, x: torch.Tensor) -> bool:
        """A CPU training call of a dense, zero-padded conv on a channels_last batch, in eager autograd:
        not under torch.compile, fx, torch.func transforms or forward-mode AD (the Function has no
        jvp or vmap rule), nor with deterministic algorithms asked for (the choice is timed)."""
        return (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight.requires_grad
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and x.dim() == 4
                and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()
                and not torch._C._are_functorch_transforms_active() and not torch.jit.is_tracing()
                and torch.autograd.forward_ad._current_level < 0
                and not torch.are_deterministic_algorithms_enabled())
