"""A faster weight gradient for a first convolution with one input channel on the CPU, bit for bit PyTorch's (#27).

LeNet-5's first layer (1 -> 6 channels, 5x5) computes no input gradient (the images need none), only its weight and
bias gradients, and on the CPU in the default NCHW layout oneDNN picks a slow kernel for them: about half of a whole
training step at batch 256 (``mnistbench profile-layers``, reference/layers-cpu). Its channels-last kernel is several
times faster. For one input channel a weight of shape (out, 1, kh, kw) holds its elements in the same order in both
layouts, so the backward pass here hands PyTorch the same weight with channels-last strides (a view: nothing is
copied) and oneDNN takes the channels-last kernel. The forward pass is PyTorch's own, unchanged.

The two kernels need not sum in the same order: for LeNet-5's first layer they gave the same bits here (2-vCPU AVX2,
torch 2.14.1, every batch size tried), for other geometries (a dilation, a stride with one sample) they did not. So
the fast kernel is taken only where it was checked to give PyTorch's bits, once per shape, geometry and thread count
on this machine (``verified``); elsewhere the gradient is PyTorch's own. `MNISTBENCH_ENGINE_OFF=fast-conv1` turns it
off; scripts/engine_ab.py compares whole trainings.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _channels_last_view(weight: torch.Tensor) -> torch.Tensor:
    """A contiguous ``weight`` (out, 1, kh, kw) with channels-last strides: the same storage, read in the same order."""
    return weight.as_strided(weight.shape, (weight.stride(0), 1, weight.shape[3], 1))


def _gradients(grad, x, weight, geometry: tuple, mask: list, fast: bool) -> tuple:
    """The weight and bias gradients by PyTorch's convolution backward, given the weight as it is or (``fast``) with
    channels-last strides."""
    stride, padding, dilation, bias_sizes = geometry
    w = _channels_last_view(weight) if fast else weight
    _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad, x, w, None if bias_sizes is None else list(bias_sizes), stride, padding, dilation, False, [0, 0], 1, mask)
    if grad_weight is not None and fast:
        grad_weight = grad_weight.as_strided(weight.shape, weight.stride())  # the parameter's layout, the same elements
    return grad_weight, grad_bias


# Whether the channels-last kernel gave the NCHW kernel's bits, per shape, geometry and thread count (see verified).
_VERIFIED: dict[tuple, bool] = {}


def verified(grad, x, weight, geometry: tuple, mask: list) -> bool:
    """Whether the fast gradients are the same bits as PyTorch's for tensors of these shapes here.

    Checked once per key on random tensors of the same shapes: a kernel's order of summation depends on the shapes,
    the geometry, the thread count and the machine, never on the values, and two orders give different bits on random
    values; so the same bits on the probe mean the same order, and the fast path is taken only then.
    """
    key = (tuple(x.shape), x.stride(), tuple(grad.shape), grad.stride(), tuple(weight.shape), weight.stride(), geometry,
           tuple(mask), torch.get_num_threads())
    if key not in _VERIFIED:
        gen = torch.Generator().manual_seed(0)
        probe_x = torch.randn(x.shape, generator=gen).as_strided(x.shape, x.stride())
        probe_grad = torch.randn(grad.shape, generator=gen).as_strided(grad.shape, grad.stride())
        want = _gradients(probe_grad, probe_x, weight, geometry, mask, fast=False)
        got = _gradients(probe_grad, probe_x, weight, geometry, mask, fast=True)
        _VERIFIED[key] = all((w is None and g is None) or (w is not None and g is not None and torch.equal(w, g))
                             for w, g in zip(want, got))
    return _VERIFIED[key]


class _FirstConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (tuple(stride), tuple(padding), tuple(dilation), None if bias is None else tuple(bias.shape))
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        mask = [False, ctx.needs_input_grad[1], ctx.geometry[3] is not None and ctx.needs_input_grad[2]]
        fast = verified(grad, x, weight, ctx.geometry, mask)
        grad_weight, grad_bias = _gradients(grad, x, weight, ctx.geometry, mask, fast)
        return None, grad_weight, grad_bias, None, None, None


class FirstConv2d(nn.Conv2d):
    """``nn.Conv2d`` with one input channel whose weight gradient takes the channels-last kernel when its input needs
    no gradient (on the CPU, training); PyTorch's own path otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.requires_grad or not torch.is_grad_enabled() or x.dim() != 4
                or not x.is_contiguous() or not self.weight.is_contiguous()):
            return super().forward(x)
        return _FirstConv.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def plain_one_channel(module: nn.Module) -> bool:
    """Whether ``module`` is exactly an ``nn.Conv2d`` with one input channel, no groups and zero padding mode."""
    return (type(module) is nn.Conv2d and module.in_channels == 1 and module.groups == 1
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))


def swap_first_convs(model: nn.Module) -> int:
    """Make every one-input-channel ``nn.Conv2d`` inside ``model`` a ``FirstConv2d`` in place; the number changed.

    The class changes, not the parameters: the state dict (its keys included) is the same.
    """
    convs = [m for m in model.modules() if plain_one_channel(m)]
    for m in convs:
        m.__class__ = FirstConv2d
    return len(convs)
