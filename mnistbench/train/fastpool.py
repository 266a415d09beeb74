"""A faster 2x2 max-pool for the CPU, bit for bit PyTorch's ``nn.MaxPool2d(2)`` (issue #27).

PyTorch's CPU max-pool with indices (what training calls) walks each window element by element; on LeNet-5's first
layer it cost as much as the layer's convolution. The same maxima come from three element-wise ``maximum`` over the
window's four strided views, and the index max_pool2d would record (the first maximum in the window's row-major
order) from three comparisons; the backward pass is PyTorch's own max_pool2d backward with those indices. Values,
indices and gradients are therefore the same as PyTorch's (a window holding a NaN aside: both give NaN, maybe
routing its gradient to another element of the window).

A ReLU just before such a pool (LeNet-5's conv -> ReLU -> pool) is done by the pool after pooling (``fold_relus``):
the same values and gradients, the ReLU's two passes on a quarter of the elements.

In training (``planes``, `pool-planes`), the windows' four elements are first copied into four contiguous planes: on
strided views PyTorch's element-wise kernels run element by element, and a comparison into bool is never vectorized,
so the planes, with the comparisons written as 1.0 or 0.0 and the index computed in float32 (small integers, exact),
cost less than the views, copy included. The same elements and the same arithmetic: the same maxima and indices.

Where the engine's C kernels load (native.py, `native-pool`), training takes kernels.c's pool instead: one pass that
keeps each window's choice (0..3, a byte) and, in the backward pass, one pass that writes the input's gradient. It
follows max_pool2d's own rule element by element, so it gives PyTorch's bits (signed zeros included, which the
element-wise ``maximum`` above does not keep), and it is taken only where a probe of the same shape gave PyTorch's
values and gradients on this machine (``native_verified``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import native
from .speedups import speedup


_CORNERS: dict[tuple, torch.Tensor] = {}


def _corners(h: int, w: int, width: int, device: torch.device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The flat index of each 2x2 window's top-left element in its (2h x width) plane, made once per shape."""
    key = (h, w, width, device, dtype)
    if key not in _CORNERS:
        _CORNERS[key] = (torch.arange(h).mul_(2 * width).unsqueeze(1) + torch.arange(w).mul_(2)).to(device, dtype)
    return _CORNERS[key]


def _planes(x: torch.Tensor) -> tuple:
    """The four elements of every 2x2 window of a contiguous ``x`` (N x C x H x W) as four contiguous planes
    (N x C x H/2 x W/2: top-left, top-right, bottom-left, bottom-right), in one copy."""
    n, ch, hh, ww = x.shape
    s = x.view(n, ch, hh // 2, 2, ww // 2, 2).permute(3, 5, 0, 1, 2, 4).contiguous()
    return s[0, 0], s[0, 1], s[1, 0], s[1, 1]


def _vectorized(x: torch.Tensor) -> bool:
    """Whether the window's planes are worth copying out (a contiguous NCHW tensor, as LeNet-5's convolutions give)
    and every index fits a float32 exactly (the offsets are computed in it)."""
    return x.is_contiguous() and x.shape[-2] * x.shape[-1] + x.shape[-1] < 2 ** 24


# Whether kernels.c's pool gave PyTorch's values and gradients, per input shape and ReLU (see native_verified).
_NATIVE_VERIFIED: dict[tuple, bool] = {}


def _reference(x: torch.Tensor, grad: torch.Tensor, relu: bool) -> tuple:
    """PyTorch's own 2x2 max-pool (then the ReLU) of ``x`` and its input's gradient from ``grad``."""
    out, indices = F.max_pool2d_with_indices(x, 2)
    if relu:
        out = out.clamp_min(0)
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
    grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
    return out, grad_x


def _probe_values(shape: tuple, gen: torch.Generator) -> torch.Tensor:
    """Random values of ``shape`` with what a pool must get right: ties (a blank background), +0 and -0, ±inf, NaN."""
    x = torch.randn(shape, generator=gen).mul_(2).round_().div_(2)  # many ties
    flat = x.view(-1)
    picks = torch.randint(0, flat.numel(), (5, max(1, flat.numel() // 50)), generator=gen)
    for pick, value in zip(picks, (-0.0, 0.0, float("inf"), -float("inf"), float("nan"))):
        flat[pick] = value
    return x


def native_verified(shape: tuple, relu: bool) -> bool:
    """Whether kernels.c's pool gives PyTorch's bits (values, signs of zeros, gradients) for inputs of ``shape``.

    Checked once per shape on values full of ties, signed zeros, infinities and NaNs, with gradients holding signed
    zeros; compared as bits, so a zero's sign and a NaN's payload count.
    """
    key = (tuple(shape), relu)
    if key not in _NATIVE_VERIFIED:
        gen = torch.Generator().manual_seed(0)
        x = _probe_values(shape, gen)
        grad = torch.randn((*shape[:-2], shape[-2] // 2, shape[-1] // 2), generator=gen)
        grad.view(-1)[::7] = -0.0
        want_out, want_grad = _reference(x, grad, relu)
        kernels = native.load()
        out, choice = kernels.pool_forward(x, relu)
        got_grad = kernels.pool_backward(grad, out, choice, relu)
        bits = lambda t: t.view(torch.int32)  # noqa: E731 - torch.equal holds -0 == +0
        _NATIVE_VERIFIED[key] = torch.equal(bits(out), bits(want_out)) and torch.equal(bits(got_grad), bits(want_grad))
    return _NATIVE_VERIFIED[key]


def _native(x: torch.Tensor, relu: bool) -> bool:
    """Whether training takes kernels.c's pool for ``x``: on, loaded, a float32 contiguous input, shown to agree."""
    return (x.dtype == torch.float32 and x.is_contiguous() and speedup("native-pool") and native.load().lib is not None
            and native_verified(tuple(x.shape), relu))


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, relu: bool = False, planes: bool = False) -> torch.Tensor:
        ctx.native = ctx.needs_input_grad[0] and _native(x, relu)
        if ctx.native:
            out, choice = native.load().pool_forward(x, relu)
            ctx.relu = relu
            ctx.save_for_backward(out, choice)
            return out
        # On strided views of x every operation runs element by element; on contiguous planes it is vectorized, and
        # with the index to compute that pays for the copy (each plane holds the same elements of x: the same
        # maxima). For the maxima alone (evaluation) it does not.
        planes = planes and ctx.needs_input_grad[0] and _vectorized(x)
        if planes:
            a, b, c, d = _planes(x)
        else:
            a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        if ctx.needs_input_grad[0]:
            h, w = out.shape[-2:]
            width = x.shape[-1]
            # The first maximum in row-major window order, as max_pool2d's kernel keeps it (ties are common: the
            # blank background of a digit gives a constant convolution output). Its offset from the window's corner,
            # 0 (a), 1 (b), width (c) or width + 1 (d), is (a != out) * (1 + (b != out) * (width - 1 + (c != out))),
            # plus the window's corner: the index max_pool2d keeps.
            if planes:
                # Comparisons into float32 (1 or 0) take PyTorch's vectorized kernels, into bool they do not; the
                # offsets and indices are small integers, exact in float32 (_vectorized); the planes are spent.
                offset = torch.ne(c, out, out=c).add_(width - 1).mul_(torch.ne(b, out, out=b)).add_(1)
                offset.mul_(torch.ne(a, out, out=a)).add_(_corners(h, w, width, x.device, torch.float32))
                indices = offset.to(torch.int64)
            else:
                # Integer arithmetic on the comparisons (three times cheaper than nested torch.where), in 32 bits
                # (a fifth faster than in 64), widened by adding the window's corner.
                offset = (c != out).to(torch.int32).add_(width - 1).mul_(b != out).add_(1).mul_(a != out)
                indices = torch.add(_corners(h, w, width, x.device), offset)
        if relu:
            out = out.clamp_min_(0)  # ReLU(max) = max(ReLU): the ReLU on a quarter of the elements
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, indices, out if relu else None)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        if ctx.native:
            out, choice = ctx.saved_tensors
            return native.load().pool_backward(grad.contiguous(), out, choice, ctx.relu), None, None
        x, indices, relu_out = ctx.saved_tensors
        if relu_out is not None:  # ReLU's own backward (threshold at 0 on its output), then the pool's
            grad = torch.ops.aten.threshold_backward(grad, relu_out, 0)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices), None, None


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` computed as above for even-sized CPU batches (N x C x H x W), by PyTorch otherwise; with
    ``relu``, followed by the ReLU that came before it (``fold_relus``); with ``planes``, on the windows' elements
    copied into four contiguous planes first (``_planes``)."""

    def __init__(self, relu: bool = False, planes: bool = True) -> None:
        super().__init__(2)
        self.relu = relu
        self.planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
            out = F.max_pool2d(x, 2)
            return F.relu(out) if self.relu else out
        return _MaxPool2x2.apply(x, self.relu, self.planes)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", then the ReLU before it" if self.relu else "")


class FoldedReLU(nn.ReLU):
    """An ``nn.ReLU`` whose work the max-pool after it does (on a quarter of the elements): it passes its input on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def plain_2x2(module: nn.Module) -> bool:
    """Whether ``module`` is exactly ``nn.MaxPool2d(2)`` (stride 2, no padding or dilation, floor, no indices)."""
    if type(module) is not nn.MaxPool2d:
        return False
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (pair(module.kernel_size) == (2, 2) and pair(module.stride or module.kernel_size) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1)
            and not module.ceil_mode and not module.return_indices)


def swap_max_pools(model: nn.Module, planes: bool = True) -> int:
    """Replace every ``nn.MaxPool2d(2)`` inside ``model`` by ``MaxPool2x2`` (``planes`` as given) in place; the number
    replaced.

    Pooling has no parameters or buffers, so the state dict (its keys included) is unchanged.
    """
    swaps = [(parent, name) for parent in model.modules() for name, child in parent.named_children() if plain_2x2(child)]
    for parent, name in swaps:
        setattr(parent, name, MaxPool2x2(planes=planes))
    return len(swaps)


def fold_relus(model: nn.Module) -> int:
    """In every ``nn.Sequential`` of ``model``, let each ``MaxPool2x2`` that directly follows an ``nn.ReLU`` apply the
    ReLU itself, after pooling, and make that ReLU a ``FoldedReLU`` (in place); the number folded.

    Max-pooling and the ReLU commute exactly (both pick an element or 0, and the first maximum of the window is the
    same before and after the ReLU wherever the gradient is not 0), so values and gradients keep their bits; the ReLU
    and its backward run on a quarter of the elements. Neither has parameters: the state dict is unchanged.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.children())
        for relu, pool in zip(children, children[1:]):
            if type(relu) is nn.ReLU and type(pool) is MaxPool2x2 and not pool.relu:
                pool.relu = True
                relu.__class__ = FoldedReLU
                folded += 1
    return folded
