"""Adam's update over one flat copy of the moments, bit for bit PyTorch's batched (foreach) Adam (issue #27).

On the CPU PyTorch's batched Adam runs each of its seven element-wise operations once per parameter tensor: for
LeNet-5's ten tensors that is some seventy kernel calls of a few hundred elements each, and the update cost about as
much as the first convolution's forward pass (``mnistbench profile-step``). Here the two moments live in one flat
buffer each (every parameter's state entries are views of it, so ``state_dict`` and checkpoints are unchanged), the
gradients are gathered into one flat tensor, and each operation runs once over all of them; only the last one, which
writes the parameters, runs per tensor. The operations, their order and their scalars are PyTorch's own
(torch/optim/adam.py, ``_multi_tensor_adam``), so every element goes through the same arithmetic.

The same arithmetic gives the same bits only if a kernel computes an element the same way wherever it lies: PyTorch's
element-wise kernels use a vector path for the body of a tensor and a scalar path for its tail, and on some machine
the two may round differently (a fused multiply-add in one of them). So the flat update is used only where a probe
of the same parameter sizes, thread count and options gave PyTorch's bits on this machine (``verified``); elsewhere,
and for what it does not cover (a parameter without a gradient, non-contiguous parameters, amsgrad, maximize, tensors
as hyper-parameters), the step is PyTorch's batched one on the same state. `MNISTBENCH_ENGINE_OFF=fast-adam` turns it
off; scripts/engine_ab.py compares whole trainings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.optim.optimizer import _get_scalar_dtype


def _plain(group: dict) -> bool:
    """Whether a parameter group's options are those the flat update implements."""
    return (not group["amsgrad"] and not group["maximize"] and not group["capturable"] and not group["differentiable"]
            and not group.get("fused") and all(isinstance(v, float) for v in (group["lr"], *group["betas"]))
            and group["foreach"] is not False)


@dataclass
class FlatMoments:
    """The moments of every parameter in one flat buffer each, a work buffer, and each parameter's views of them."""

    m: torch.Tensor
    v: torch.Tensor
    work: torch.Tensor
    m_views: list
    v_views: list
    work_views: list

    @classmethod
    def zeros(cls, params: list) -> "FlatMoments":
        total, dtype = sum(p.numel() for p in params), params[0].dtype  # the parameters' (not the default dtype)
        m, v, work = torch.zeros(total, dtype=dtype), torch.zeros(total, dtype=dtype), torch.empty(total, dtype=dtype)
        views = lambda flat: [flat[o:o + p.numel()].view_as(p) for o, p in zip(_offsets(params), params)]  # noqa: E731
        return cls(m, v, work, views(m), views(v), views(work))


def _offsets(params: list) -> list:
    offsets, o = [], 0
    for p in params:
        offsets.append(o)
        o += p.numel()
    return offsets


def _flat_update(params: list, grads: list, flat: FlatMoments, group: dict, step: float) -> None:
    """One Adam step of ``params`` (given their ``grads``) whose moments are ``flat``: PyTorch's ``_multi_tensor_adam``
    operation by operation, over one tensor instead of a list."""
    beta1, beta2 = group["betas"]
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    g = torch.cat([t.reshape(-1) for t in grads])
    flat.m.lerp_(g, 1 - beta1)
    flat.v.mul_(beta2)
    flat.v.addcmul_(g, g, value=1 - beta2)
    del g
    step_size = (lr / (1 - beta1 ** step)) * -1
    torch.sqrt(flat.v, out=flat.work)
    flat.work.div_((1 - beta2 ** step) ** 0.5)
    flat.work.add_(eps)
    for p, m, d in zip(params, flat.m_views, flat.work_views):
        p.addcdiv_(m, d, value=step_size)


# Whether the flat update gave PyTorch's bits, per parameter sizes, options and thread count (see verified).
_VERIFIED: dict[tuple, bool] = {}


def verified(sizes: tuple, group: dict) -> bool:
    """Whether the flat update gives the same bits as PyTorch's batched Adam for parameters of these sizes here.

    Checked once per key on random parameters and gradients over three steps with changing hyper-parameters, beta1
    on the same side of 0.5 as the group's (``lerp`` computes by one formula below a weight of 0.5, by another from
    it on, so a probe of one says nothing of the other): where a
    kernel's vector and scalar paths round alike, every element gets the same bits wherever it lies; where they do
    not (a fused multiply-add in one of them), random values show it.
    """
    options = (group["weight_decay"] != 0, group["decoupled_weight_decay"])
    large = abs(1 - group["betas"][0]) >= 0.5  # lerp's other formula (beta1 <= 0.5): probed in its own regime
    key = (sizes, options, large, torch.get_num_threads())
    if key not in _VERIFIED:
        gen = torch.Generator().manual_seed(0)
        randn = lambda n: torch.randn(n, generator=gen, dtype=torch.float32)  # noqa: E731 - what the flat path takes
        start = [randn(n) for n in sizes]
        grads = [[randn(n) * 10.0 ** -(k + i % 4) for i, n in enumerate(sizes)] for k in range(3)]
        hyper = [dict(group, lr=lr, betas=(b1, 0.999)) for lr, b1 in zip((1e-3, 3e-2, 7e-3), (0.3, 0.45, 0.2) if large else (0.95, 0.9, 0.85))]
        want = [t.clone() for t in start]
        reference = torch.optim.Adam(want, lr=1e-3, eps=group["eps"], weight_decay=group["weight_decay"], foreach=True,
                                     decoupled_weight_decay=group["decoupled_weight_decay"])
        got = [t.clone() for t in start]
        flat = FlatMoments.zeros(got)
        for k in range(3):
            reference.param_groups[0].update(lr=hyper[k]["lr"], betas=hyper[k]["betas"])
            for p, g in zip(want, grads[k]):
                p.grad = g.clone()
            reference.step()
            _flat_update(got, grads[k], flat, hyper[k], float(k + 1))
        state = [reference.state[p] for p in want]
        cat = lambda name: torch.cat([s[name] for s in state])  # noqa: E731
        _VERIFIED[key] = (all(torch.equal(a, b) for a, b in zip(want, got)) and torch.equal(cat("exp_avg"), flat.m)
                          and torch.equal(cat("exp_avg_sq"), flat.v))
    return _VERIFIED[key]


class _Flat:
    """The flat update as a mixin of torch.optim.Adam / AdamW: the state stays PyTorch's (views of the flat buffers),
    so ``state_dict``, ``load_state_dict`` and checkpoints are those of the parent class."""

    _flat: Optional[FlatMoments]  # while every parameter's moments are views of it
    _ONE = torch.tensor(1.0)

    def _flat_state(self, group: dict) -> Optional[FlatMoments]:
        """The flat moments of the group's parameters, made on the first step or after a state was loaded (its values
        copied in); None where they cannot be flat or the flat update was not shown to give PyTorch's bits here."""
        if self._flat is not None:
            return self._flat
        params = group["params"]
        if not all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous() for p in params):
            return None
        if not verified(tuple(p.numel() for p in params), group):
            return None
        states = [self.state[p] for p in params]
        if any(states) and not all(states):
            return None
        if not any(states):  # the first step: PyTorch's initial state (Adam._init_group)
            for s in states:
                s["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        if len({float(s["step"]) for s in states}) != 1:
            return None
        flat = FlatMoments.zeros(params)
        for s, m, v in zip(states, flat.m_views, flat.v_views):
            for name, view in (("exp_avg", m), ("exp_avg_sq", v)):
                if name in s:
                    view.copy_(s[name])
                s[name] = view
        self._flat = flat
        return flat

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._flat = None  # the loaded state is in new tensors: made flat again at the next step

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        self._flat = None

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or len(self.param_groups) != 1 or not _plain(self.param_groups[0]):
            return super().step(closure)
        group = self.param_groups[0]
        params = group["params"]
        flat = None
        if all(p.grad is not None and p.grad.layout == torch.strided and p.grad.is_contiguous() for p in params):
            flat = self._flat_state(group)
        if flat is None:
            self._flat = None  # PyTorch's step may leave the parameters' steps unequal: checked again next time
            return super().step()
        steps = [self.state[p]["step"] for p in params]
        torch._foreach_add_(steps, self._ONE, alpha=1.0)
        _flat_update(params, [p.grad for p in params], flat, group, steps[0].item())
        return None


class FlatAdam(_Flat, torch.optim.Adam):
    """``torch.optim.Adam(foreach=True)`` whose update runs over one flat copy of the moments (same bits)."""

    def __init__(self, params, **options) -> None:
        self._flat = None
        super().__init__(params, foreach=True, **options)


class FlatAdamW(_Flat, torch.optim.AdamW):
    """``torch.optim.AdamW(foreach=True)`` whose update runs over one flat copy of the moments (same bits)."""

    def __init__(self, params, **options) -> None:
        self._flat = None
        super().__init__(params, foreach=True, **options)
