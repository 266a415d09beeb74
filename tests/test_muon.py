"""optimizer: muon (mnistbench/train/muon.py) and max_steps, a step budget that cuts the last epoch short."""

import copy
import math

import pytest
import torch

from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from conftest import write_spec
from mnistbench.cli import app
from mnistbench.data.datasets import load_dataset
from mnistbench.spec.schema import CellConfig
from mnistbench.train.engine import build_optimizer, build_scheduler, run_cell
from mnistbench.train.muon import Muon, lr_ratio, orthogonalize


def cfg(**kw):
    base = dict(model="lenet5", device="cpu", epochs=2, batch_size=32, eval_batch_size=50, threads=1)
    return CellConfig(**{**base, **kw})


@pytest.fixture
def tiny(tiny_data):
    return load_dataset("mnist", tiny_data, allow_download=False)


@pytest.mark.parametrize("shape", [(6, 25), (120, 256), (256, 120), (10, 84)])
def test_newton_schulz_brings_every_singular_value_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    g[:, 0] *= 100  # badly conditioned, as gradients are
    s = torch.linalg.svdvals(orthogonalize(g))
    assert orthogonalize(g).shape == g.shape
    assert s.min() > 0.5 and s.max() < 1.3  # the quintic's band, not exactly one (muon.py)
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 20  # what it was given was far from it


def test_a_weight_matrix_moves_as_torch_optim_muon_moves_it():
    # torch.optim.Muon orthogonalizes in bfloat16, this one in float32: the same step up to bfloat16's rounding.
    torch.manual_seed(0)
    w0 = torch.randn(24, 40)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt_ours = Muon([ours], lr=0.02, momentum=0.95, weight_decay=0.1)
    opt_theirs = torch.optim.Muon([theirs], lr=0.02, momentum=0.95, weight_decay=0.1, nesterov=True)
    for _ in range(2):
        g = torch.randn(24, 40)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    d_ours, d_theirs = (ours.detach() - w0).flatten(), (theirs.detach() - w0).flatten()
    assert torch.nn.functional.cosine_similarity(d_ours, d_theirs, dim=0) > 0.999
    assert d_ours.norm() == pytest.approx(d_theirs.norm().item(), rel=0.01)
    assert opt_ours.state[ours]["momentum_buffer"].shape == opt_theirs.state[theirs]["momentum_buffer"].shape


def test_a_filter_bank_is_orthogonalized_as_one_matrix_per_output_channel():
    conv = torch.nn.Parameter(torch.zeros(16, 6, 5, 5))
    g = torch.randn(16, 6, 5, 5)
    conv.grad = g.clone()
    Muon([conv], lr=0.1, momentum=0.0).step()  # no momentum: the update is the gradient's orthogonal part
    want = -0.1 * lr_ratio(conv.shape) * orthogonalize(g.reshape(16, 150))
    assert torch.equal(conv.detach(), want.view(16, 6, 5, 5))
    assert lr_ratio(torch.Size([16, 6, 5, 5])) == 1.0 and lr_ratio(torch.Size([256, 120])) == math.sqrt(256 / 120)


@pytest.mark.parametrize("impl", [dict(foreach=True), dict(foreach=False), dict(fused=True)])
def test_biases_take_pytorchs_adam_step_to_the_bit(impl):
    torch.manual_seed(1)
    b0 = torch.randn(120)
    ours, theirs = torch.nn.Parameter(b0.clone()), torch.nn.Parameter(b0.clone())
    opt_ours = Muon([ours], lr=0.01, weight_decay=1e-4, **impl)
    opt_theirs = torch.optim.Adam([theirs], lr=0.01, weight_decay=1e-4, **impl)
    for _ in range(5):
        g = torch.randn(120)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    assert torch.equal(ours, theirs)
    assert set(opt_ours.state[ours]) == set(opt_theirs.state[theirs])


def test_one_cycle_cycles_adams_beta_and_leaves_muons_momentum_fixed():
    model = torch.nn.Linear(8, 4)
    opt = build_optimizer(cfg(optimizer="muon", lr=0.02, momentum=0.95, ns_steps=3), model.parameters())
    assert [g["muon"] for g in opt.param_groups] == [True, False] and opt.param_groups[0]["ns_steps"] == 3
    sched = build_scheduler(cfg(optimizer="muon", lr=0.02, schedule="onecycle", epochs=1), opt, 10 * 32)
    betas, momenta, lrs = [], [], []
    for _ in range(10):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
        betas.append(opt.param_groups[1]["betas"][0])
        momenta.append(opt.param_groups[0]["momentum"])
        lrs.append([g["lr"] for g in opt.param_groups])
    assert len(set(betas)) > 3 and set(momenta) == {0.95}
    assert all(a == b for a, b in lrs)  # one learning rate for both parts


def _muon_step_one_parameter_at_a_time(opt: Muon, group: dict, params: list) -> None:
    """The Muon update written per parameter, as torch.optim.Muon writes it: the oracle of the batched step."""
    lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
    for p in params:
        buf = opt.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        buf.lerp_(p.grad, 1 - momentum)
        update = p.grad.lerp(buf, momentum)
        ortho = orthogonalize(update.reshape(len(update), -1), group["ns_steps"])
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(ortho.view_as(p), alpha=-lr * lr_ratio(p.shape))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_batched_muon_step_gives_the_bits_of_one_parameter_at_a_time(monkeypatch, weight_decay):
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (120, 256), (120,), (84, 120), (10, 84)]
    torch.manual_seed(0)
    start = [torch.randn(s) * 0.1 for s in shapes]
    a = [torch.nn.Parameter(t.clone()) for t in start]
    b = [torch.nn.Parameter(t.clone()) for t in start]
    opt_a = Muon(a, lr=0.03, momentum=0.9, ns_steps=3, weight_decay=weight_decay)
    opt_b = Muon(b, lr=0.03, momentum=0.9, ns_steps=3, weight_decay=weight_decay)
    monkeypatch.setattr(opt_b, "_muon_step", lambda group, params: _muon_step_one_parameter_at_a_time(opt_b, group, params))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=g) * 0.01
            y.grad = x.grad.clone()
        opt_a.step()
        opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[3], start[3])  # it moved


def test_muon_resumes_from_its_state_dict_to_the_same_weights():
    def steps(opt, model, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5), torch.nn.Flatten(), torch.nn.Linear(6 * 24 * 24, 10))
    b = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5), torch.nn.Flatten(), torch.nn.Linear(6 * 24 * 24, 10))
    b.load_state_dict(a.state_dict())
    opt_a = Muon(a.parameters(), lr=0.01)
    steps(opt_a, a, 3, 1)
    opt_b = Muon(b.parameters(), lr=0.01)
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a checkpoint: nothing shared
    steps(opt_a, a, 2, 2)
    steps(opt_b, b, 2, 2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_muon_trains_lenet5_and_repeats(tiny):
    config = cfg(optimizer="muon", lr=0.02, momentum=0.95, schedule="onecycle", label_smoothing=0.1)
    runs = [run_cell(config, tiny) for _ in range(2)]
    assert [e.test_loss for e in runs[0].epochs] == [e.test_loss for e in runs[1].epochs]
    assert runs[0].epochs[-1].test_accuracy > 0.3 and runs[0].epochs[-1].test_loss < math.log(10)


def test_max_steps_cuts_the_last_epoch_short_and_the_schedule_ends_there(tiny):
    # 256 training samples at batch 32: 8 steps an epoch; 13 steps are 8 and 5.
    config = cfg(max_steps=13, schedule="onecycle", lr=0.01, target_accuracy=0.01)
    assert config.steps_per_epoch(256) == [8, 5]
    schedules = []
    out = run_cell(config, tiny, on_epoch=lambda m, state: schedules.append(state().scheduler))
    assert [s["last_epoch"] for s in schedules] == [8, 13] and schedules[-1]["total_steps"] == 13  # no step more
    assert out.epochs[1].train_samples_per_s == pytest.approx(5 * 32 / out.epochs[1].train_seconds)
    assert out.epochs_to_target == pytest.approx(1.0)  # reached after epoch 1 (a whole one)
    full = run_cell(cfg(schedule="onecycle", lr=0.01), tiny)
    assert out.epochs[0].train_loss != full.epochs[0].train_loss  # another schedule from the first step


def test_an_epoch_cut_short_counts_its_part_toward_the_target(tiny):
    first = run_cell(cfg(max_steps=12, epochs=2, lr=3e-3), tiny)
    target = first.epochs[1].test_accuracy
    assert first.epochs[0].test_accuracy < target  # reached only in the cut epoch: after 1 + 4/8 epochs
    again = run_cell(cfg(max_steps=12, epochs=2, lr=3e-3, target_accuracy=target), tiny)
    assert again.epochs_to_target == 1.5 and again.time_to_target_s == pytest.approx(sum(e.train_seconds for e in again.epochs))


@pytest.mark.parametrize("max_steps, words", [(8, "steps 9 to 16"), (17, "steps 9 to 16")])
def test_a_step_budget_outside_the_last_epoch_is_refused_in_one_line(max_steps, words):
    config = cfg(max_steps=max_steps)
    assert words in config.step_budget_problem(256)
    with pytest.raises(ValueError, match="max_steps"):
        config.steps_per_epoch(256)
    assert cfg(max_steps=9).step_budget_problem(256) is None and cfg(max_steps=16).step_budget_problem(256) is None
    assert "at most 8 steps" in cfg(max_steps=9, epochs=1).step_budget_problem(256)


def test_the_cli_refuses_a_step_budget_that_does_not_fit_before_training(tmp_path, tiny_data):
    spec = write_spec(tmp_path / "s.yaml", "name: s\nmodel: lenet5\ndevice: cpu\nepochs: 2\nbatch_size: 32\n"
                                           "max_steps: 40\n")
    r = CliRunner().invoke(app, ["run", str(spec), "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")])
    assert_one_line_error(r, "max_steps: 40 must end in the last of the 2 epochs (steps 9 to 16")
    assert not list((tmp_path / "r").rglob("*.json"))


def test_settings_added_for_muon_leave_older_keys_alone():
    plain = cfg()
    assert plain.key() == cfg(max_steps=None, ns_steps=5).key()
    assert plain.key() != cfg(max_steps=12).key() and plain.key() != cfg(ns_steps=3).key()


def test_a_budget_of_every_step_trains_exactly_as_no_budget(tiny):
    plain = run_cell(cfg(schedule="onecycle", lr=0.01), tiny)
    budget = run_cell(cfg(schedule="onecycle", lr=0.01, max_steps=16), tiny)
    strip = lambda o: [(e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy, e.lr) for e in o.epochs]
    assert strip(plain) == strip(budget)


def test_the_report_counts_the_epochs_a_budget_trains_and_scales_a_cut_epochs_seconds(tmp_path, tiny_data):
    import csv
    import json

    spec = write_spec(tmp_path / "s.yaml", "name: s\nmodel: lenet5\ndevice: cpu\nepochs: 2\nbatch_size: 32\n"
                                           "threads: 1\nmax_steps: 12\nmatrix:\n  seed: [0, 1]\n")
    r = CliRunner().invoke(app, ["run", str(spec), "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "r" / "s"
    runs = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]
    assert [r["extra"]["epoch_samples"] for r in runs] == [256, 256]
    row = next(csv.DictReader((folder / "summary.csv").open()))
    assert row["epochs"] == "1.5"  # 8 steps and 4 of 8
    cut = sorted(2 * r["epochs"][1]["train_seconds"] for r in runs)  # the steady epoch is the cut one: half an epoch
    assert float(row["seconds_per_epoch_median"]) == pytest.approx(sum(cut) / 2, rel=1e-4)  # the CSV keeps 6 digits
