"""A faster 2x2 max-pool for the CPU, bit for bit PyTorch's ``nn.MaxPool2d(2)`` (issue #27).

PyTorch's CPU max-pool with indices (what training calls) walks each window element by element; on LeNet-5's first
layer it cost as much as the layer's convolution. The same maxima come from three element-wise ``maximum`` over the
window's four strided views, and the index max_pool2d would record (the first maximum in the window's row-major
order) from three comparisons; the backward pass is PyTorch's own max_pool2d backward with those indices. Values,
indices and gradients are therefore the same as PyTorch's (a window holding a NaN aside: both give NaN, maybe
routing its gradient to another element of the window).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        if ctx.needs_input_grad[0]:
            h, w = out.shape[-2:]
            width = x.shape[-1]
            corner = (torch.arange(h).mul_(2 * width).unsqueeze(1) + torch.arange(w).mul_(2)).to(x.device)
            # The first maximum in row-major window order, as max_pool2d's kernel keeps it (ties are common: the
            # blank background of a digit gives a constant convolution output). Its offset from the window's corner,
            # 0 (a), 1 (b), width (c) or width + 1 (d), is (a != out) * (1 + (b != out) * (width - 1 + (c != out))):
            # integer arithmetic on the comparisons, three times cheaper than nested torch.where.
            offset = (c != out).to(torch.int64).add_(width - 1).mul_(b != out).add_(1).mul_(a != out)
            ctx.save_for_backward(x, offset.add_(corner))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` computed as above for even-sized CPU batches (N x C x H x W), by PyTorch otherwise."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
            return F.max_pool2d(x, 2)
        return _MaxPool2x2.apply(x)


def plain_2x2(module: nn.Module) -> bool:
    """Whether ``module`` is exactly ``nn.MaxPool2d(2)`` (stride 2, no padding or dilation, floor, no indices)."""
    if type(module) is not nn.MaxPool2d:
        return False
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (pair(module.kernel_size) == (2, 2) and pair(module.stride or module.kernel_size) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1)
            and not module.ceil_mode and not module.return_indices)


def swap_max_pools(model: nn.Module) -> int:
    """Replace every ``nn.MaxPool2d(2)`` inside ``model`` by ``MaxPool2x2`` in place; the number replaced.

    Pooling has no parameters or buffers, so the state dict (its keys included) is unchanged.
    """
    swaps = [(parent, name) for parent in model.modules() for name, child in parent.named_children() if plain_2x2(child)]
    for parent, name in swaps:
        setattr(parent, name, MaxPool2x2())
    return len(swaps)
