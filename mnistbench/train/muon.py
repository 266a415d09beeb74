"""Muon for a model's weight matrices and convolution filters, Adam for the rest (``optimizer: muon``).

Muon (Keller Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/) keeps an SGD momentum per weight and
replaces each update by its nearest semi-orthogonal matrix, found by a few Newton–Schulz iterations. It is the
optimizer of the NanoGPT and CIFAR-10 speedrun records. ``torch.optim.Muon`` (PyTorch ≥ 2.9) implements it for 2-D
parameters only, in bfloat16. This module applies the same algorithm, with the same coefficients, Nesterov momentum
and learning-rate rule (``adjust_lr_fn="original"``), to convolution filters as well: each filter bank is treated as
the matrix (output channels) × (input channels · kernel height · kernel width), as the Muon reference code does. It
computes in float32: LeNet-5's matrices are small, and the CPUs this suite runs on have no fast bfloat16 matmul.

Biases and other parameters with fewer than two dimensions take PyTorch's own Adam update
(``torch.optim.adam.adam``, the functional form of ``torch.optim.Adam``), with the same learning rate and schedule.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adam import adam as adam_update

# Newton–Schulz coefficients of torch.optim.Muon and of the reference implementation (quintic, steepest at zero).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def orthogonalize(update: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """An approximately semi-orthogonal matrix near ``update`` (2-D), as ``torch.optim.Muon`` computes it: the
    singular values are pushed into roughly [0.7, 1.2] rather than exactly 1, which works as well and takes fewer
    steps."""
    a, b, c = NS_COEFFICIENTS
    x = update.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=EPS)  # the spectral norm is at most the Frobenius norm: at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(update.dtype)


def lr_ratio(shape: torch.Size) -> float:
    """torch.optim.Muon's default learning-rate adjustment ("original"): sqrt(max(1, rows / columns))."""
    rows, cols = shape[0], math.prod(shape[1:])
    return math.sqrt(max(1.0, rows / cols))


class Muon(torch.optim.Optimizer):
    """Muon for every parameter with two or more dimensions, Adam for the others, one learning rate for both.

    ``momentum`` is Muon's (Nesterov); ``betas``, ``eps``, ``foreach`` and ``fused`` are Adam's. A one-cycle schedule cycles Adam's first
    beta as it does for ``torch.optim.Adam`` and leaves Muon's momentum fixed, as the speedrun recipes do.
    ``weight_decay`` is decoupled for Muon (``p *= 1 - lr * wd``, as torch.optim.Muon) and plain L2 for Adam.
    The state of each parameter has torch.optim.Muon's (``momentum_buffer``) or torch.optim.Adam's keys.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, ns_steps: int = NS_STEPS,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 foreach: bool = True, fused: bool = False):
        if not 0 < ns_steps < 100:
            raise ValueError(f"ns_steps must be between 1 and 99, not {ns_steps}")
        params = list(params)
        if params and isinstance(params[0], dict):
            raise TypeError("Muon splits the parameters itself: pass the model's parameters, not groups")
        matrices = [p for p in params if p.dim() >= 2]
        others = [p for p in params if p.dim() < 2]
        groups = [{"params": ps, "muon": muon} for ps, muon in ((matrices, True), (others, False)) if ps]
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, betas=betas, eps=eps, weight_decay=weight_decay,
                        foreach=foreach, fused=fused, muon=False)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adam_step)(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """One Muon update of ``params``. The elementwise parts (momentum, Nesterov, weight decay) are batched over the
        parameters (``torch._foreach_*``: on the CPU the same kernel per tensor, so the same bits as one call per
        parameter, with one dispatch); the orthogonalization stays per matrix."""
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        grads = [p.grad for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, bufs, momentum)  # Nesterov
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        for p, update in zip(params, updates):
            ortho = orthogonalize(update.reshape(len(update), -1), group["ns_steps"])
            p.add_(ortho.view_as(p), alpha=-lr * lr_ratio(p.shape))

    def _adam_step(self, group: dict, params: list[torch.Tensor]) -> None:
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        fused = group["fused"] or None
        adam_update(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps,
                    foreach=None if fused else group["foreach"],
                    fused=fused, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                    weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
