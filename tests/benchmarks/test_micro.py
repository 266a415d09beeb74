"""Micro-benchmarks: forward, and forward+backward, of every registered model at batch sizes 1, 64 and 1024.

`make bench-micro` times them (README, "Micro-benchmarks"); under `make test` benchmarking is disabled, so each body runs
once and its assertions make it a correctness test: logits of shape (batch, 10), finite, gradients populated.
samples/s = batch / mean time (extra_info["batch"] times the OPS column).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnistbench.models.describe import count_params
from mnistbench.models.factory import create_model
from mnistbench.models.names import list_models
from mnistbench.models.zoo import INPUT_SHAPE, MODELS

BATCHES = [1, 64, 1024]

# Every registered model, so a new one is benchmarked without touching this file. make test runs each once as a
# correctness check at batch 1 and 64; batch 1024 adds time, not checks, so it runs in make test-slow and bench-micro.
cases = pytest.mark.parametrize(
    "name, batch", [pytest.param(n, b, id=f"{n}-b{b}", marks=[pytest.mark.slow] if b >= 1024 else [])
                    for n in MODELS.names() for b in BATCHES]
)


def _sync(device: torch.device):
    # CUDA kernels run asynchronously: wait for them so the timer measures the work, not the launch.
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _setup(benchmark, name: str, batch: int, device: torch.device, kind: str):
    """The model and a fixed batch on `device`, built once outside the timed function."""
    model = create_model(name).to(device)
    x = torch.randn(batch, *INPUT_SHAPE, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    benchmark.group = f"{name} {kind}"
    benchmark.extra_info.update(
        model=name, batch=batch, device=str(device), params=count_params(model), threads=torch.get_num_threads()
    )
    return model, x, y


@cases
def test_forward(benchmark, device, name, batch):
    model, x, _ = _setup(benchmark, name, batch, device, "forward")
    model.eval()
    sync = _sync(device)

    def forward():
        out = model(x)
        sync()
        return out

    with torch.inference_mode():
        logits = benchmark(forward)

    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


@cases
def test_forward_backward(benchmark, device, name, batch):
    model, x, y = _setup(benchmark, name, batch, device, "forward+backward")
    model.train()
    sync = _sync(device)

    def forward_backward():
        # Fresh gradients every round, as a training step would have; no optimizer step.
        model.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        sync()
        return logits, loss

    logits, loss = benchmark(forward_backward)

    assert logits.shape == (batch, 10)
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, f"{pname} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
