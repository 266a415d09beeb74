"""The flat Adam update (mnistbench/train/fastadam.py): PyTorch's batched Adam bit for bit, or PyTorch's own step."""

import copy

import pytest
import torch
from torch import nn

from mnistbench.spec.schema import CellConfig
from mnistbench.train import fastadam
from mnistbench.train.engine import build_optimizer
from mnistbench.train.fastadam import FlatAdam, FlatAdamW


def model_of_mixed_shapes(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 37), nn.ReLU(),
                         nn.Linear(37, 5))


def train(opt, model, steps, start=0, skip_grad=None):
    """``steps`` steps on fixed random batches, with the learning rate and beta1 changing every step (as one-cycle
    changes them); ``skip_grad``: a parameter whose gradient is dropped on odd steps."""
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float32), torch.randint(0, 5, (16,), generator=gen)
        opt.param_groups[0]["lr"] = 1e-2 * (1 + step % 5) / 5
        opt.param_groups[0]["betas"] = (0.95 - 0.01 * (step % 7), 0.999)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if skip_grad is not None and step % 2:
            skip_grad.grad = None
        opt.step()


def same_bits(a: nn.Module, b: nn.Module, opt_a, opt_b) -> bool:
    pa, pb = list(a.parameters()), list(b.parameters())
    weights = all(torch.equal(x, y) for x, y in zip(pa, pb))
    state = all(torch.equal(opt_a.state[x][k], opt_b.state[y][k])
                for x, y in zip(pa, pb) for k in ("step", "exp_avg", "exp_avg_sq"))
    return weights and state


@pytest.mark.parametrize("flat_class, torch_class, weight_decay", [
    (FlatAdam, torch.optim.Adam, 0.0), (FlatAdam, torch.optim.Adam, 1e-2), (FlatAdamW, torch.optim.AdamW, 5e-2)])
def test_the_flat_update_is_pytorchs_batched_adam_bit_for_bit(flat_class, torch_class, weight_decay):
    ours, theirs = model_of_mixed_shapes(), model_of_mixed_shapes()
    flat = flat_class(ours.parameters(), lr=1e-2, weight_decay=weight_decay)
    reference = torch_class(theirs.parameters(), lr=1e-2, weight_decay=weight_decay, foreach=True)
    train(flat, ours, 12)
    train(reference, theirs, 12)
    assert flat._flat is not None  # the flat path was taken, not PyTorch's
    assert same_bits(ours, theirs, flat, reference)


def test_float32_parameters_under_a_float64_default_dtype_train_bit_for_bit_like_pytorchs_adam():
    """A model may set the global default dtype (the engine restores it after the cell): the flat buffers follow the
    parameters, and the probe checks float32."""
    ours, theirs = model_of_mixed_shapes(), model_of_mixed_shapes()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flat = FlatAdam(ours.parameters(), lr=1e-2)
        reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=True)
        train(flat, ours, 5)
        train(reference, theirs, 5)
    finally:
        torch.set_default_dtype(previous)
    assert flat._flat is not None and flat._flat.m.dtype == torch.float32
    assert same_bits(ours, theirs, flat, reference)


def test_its_state_dict_is_pytorchs_and_a_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one():
    whole, first = model_of_mixed_shapes(), model_of_mixed_shapes()
    uninterrupted = torch.optim.Adam(whole.parameters(), lr=1e-2, foreach=True)
    train(uninterrupted, whole, 10)
    flat = FlatAdam(first.parameters(), lr=1e-2)
    train(flat, first, 5)
    saved, weights = copy.deepcopy(flat.state_dict()), copy.deepcopy(first.state_dict())
    assert sorted(saved["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    for cls in (FlatAdam, lambda p, lr: torch.optim.Adam(p, lr=lr, foreach=True)):  # either one resumes from it
        resumed = model_of_mixed_shapes()
        resumed.load_state_dict(weights)
        opt = cls(resumed.parameters(), lr=1e-2)
        opt.load_state_dict(copy.deepcopy(saved))
        train(opt, resumed, 5, start=5)
        assert same_bits(resumed, whole, opt, uninterrupted)


def test_a_parameter_without_a_gradient_gets_pytorchs_step_and_the_rest_stay_in_step():
    ours, theirs = model_of_mixed_shapes(), model_of_mixed_shapes()
    flat = FlatAdam(ours.parameters(), lr=1e-2)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=True)
    train(flat, ours, 3)
    train(reference, theirs, 3)
    train(flat, ours, 6, start=3, skip_grad=ours[5].bias)  # its step count falls behind the others'
    train(reference, theirs, 6, start=3, skip_grad=theirs[5].bias)
    train(flat, ours, 3, start=9)
    train(reference, theirs, 3, start=9)
    assert flat.state[ours[5].bias]["step"] < flat.state[ours[0].weight]["step"]
    assert flat._flat is None  # unequal steps: PyTorch's update from then on
    assert same_bits(ours, theirs, flat, reference)


def test_where_the_flat_update_would_round_differently_pytorchs_step_is_kept(monkeypatch):
    real = fastadam._flat_update

    def one_ulp_off(params, grads, flat, group, step):
        real(params, grads, flat, group, step)
        with torch.no_grad():
            params[0].copy_(torch.nextafter(params[0], torch.full_like(params[0], float("inf"))))

    monkeypatch.setattr(fastadam, "_flat_update", one_ulp_off)
    monkeypatch.setattr(fastadam, "_VERIFIED", {})
    ours, theirs = model_of_mixed_shapes(), model_of_mixed_shapes()
    flat = FlatAdam(ours.parameters(), lr=1e-2)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=True)
    train(flat, ours, 4)
    train(reference, theirs, 4)
    assert list(fastadam._VERIFIED.values()) == [False]  # checked once for these sizes, and found different
    assert same_bits(ours, theirs, flat, reference)


def test_options_it_does_not_implement_get_pytorchs_step():
    ours, theirs = model_of_mixed_shapes(), model_of_mixed_shapes()
    flat = FlatAdam(ours.parameters(), lr=1e-2, amsgrad=True)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, amsgrad=True, foreach=True)
    train(flat, ours, 4)
    train(reference, theirs, 4)
    assert flat._flat is None
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


@pytest.mark.parametrize("optimizer, impl, off, expected", [
    ("adam", "default", "", FlatAdam), ("adamw", "default", "", FlatAdamW),
    ("adam", "default", "fast-adam", torch.optim.Adam), ("adam", "default", "foreach", torch.optim.Adam),
    ("adam", "foreach", "", torch.optim.Adam), ("adam", "fused", "", torch.optim.Adam), ("sgd", "default", "", torch.optim.SGD)])
def test_the_engine_takes_it_for_the_default_adam_unless_turned_off(optimizer, impl, off, expected, monkeypatch):
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", off)
    opt = build_optimizer(CellConfig(model="mlp-matched", optimizer=optimizer, optimizer_impl=impl),
                          nn.Linear(3, 2).parameters())
    assert type(opt) is expected


def test_the_probe_runs_in_the_lerp_regime_of_the_groups_beta1(monkeypatch):
    # lerp computes m + w (g - m) for a weight w = 1 - beta1 below 0.5 and g - (1 - w)(g - m) from 0.5 on: a probe
    # with beta1 = 0.9 says nothing of a group with beta1 = 0.3, so each regime is probed with its own betas.
    seen = []
    real = fastadam._flat_update
    monkeypatch.setattr(fastadam, "_VERIFIED", {})
    monkeypatch.setattr(fastadam, "_flat_update", lambda p, g, flat, group, step: seen.append(group["betas"][0]) or real(p, g, flat, group, step))
    for beta1 in (0.9, 0.3):
        group = dict(torch.optim.Adam([torch.zeros(3)], betas=(beta1, 0.999), foreach=True).param_groups[0])
        assert fastadam.verified((3, 5), group)
    assert seen == [0.95, 0.9, 0.85, 0.3, 0.45, 0.2]
    assert {key[2] for key in fastadam._VERIFIED} == {False, True}
