"""The training engine: repeatable on the CPU, every optimizer and schedule, honest errors."""


import pytest
import torch

from mnistbench.data.datasets import load_dataset
from mnistbench.train.engine import build_optimizer, build_scheduler, resolve_device, run_cell
from mnistbench.errors import MnistbenchError
from mnistbench.models.zoo import MODELS
from mnistbench.results import derive_status
from mnistbench.spec.schema import CellConfig


def cfg(**kw):
    base = dict(model="mlp-matched", device="cpu", epochs=2, batch_size=32, eval_batch_size=50, threads=1)
    return CellConfig(**{**base, **kw})


@pytest.fixture
def tiny(tiny_data):
    return load_dataset("mnist", tiny_data, allow_download=False)


def test_the_same_cell_twice_gives_identical_metrics(tiny):
    runs = [run_cell(cfg(model="lenet5", seed=7), tiny) for _ in range(2)]
    strip = lambda o: [(e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy, e.lr) for e in o.epochs]
    assert strip(runs[0]) == strip(runs[1])
    assert strip(runs[0]) != strip(run_cell(cfg(model="lenet5", seed=8), tiny))


def test_an_epoch_records_every_metric(tiny):
    out = run_cell(cfg(epochs=3, lr=3e-3), tiny)
    assert derive_status(out.epochs) == ("finished", "") and [e.epoch for e in out.epochs] == [1, 2, 3]
    for e in out.epochs:
        assert 0 <= e.train_accuracy <= 1 and 0 <= e.test_accuracy <= 1
        assert e.train_seconds > 0 and e.eval_seconds > 0
        assert e.train_samples_per_s == pytest.approx(256 / e.train_seconds)
        assert e.eval_samples_per_s == pytest.approx(128 / e.eval_seconds)
    assert out.epochs[-1].test_accuracy > 0.5  # the synthetic digits are learnable


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adadelta", "muon"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_is_built_as_configured(optimizer, schedule):
    config = cfg(optimizer=optimizer, schedule=schedule, lr=0.01, epochs=2, step_size=1, gamma=0.5, weight_decay=1e-4)
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = build_optimizer(config, params)
    assert type(opt).__name__.lower().removeprefix("flat") == optimizer and opt.defaults["weight_decay"] == 1e-4
    sched = build_scheduler(config, opt, train_samples=4 * config.batch_size)
    lrs = []
    for _ in range(8):  # two epochs of four batches: each schedule steps once per batch
        lrs.append(opt.param_groups[0]["lr"])
        params[0].grad = torch.ones(3)
        opt.step()
        if sched is not None:
            sched.step()
    expected = {"none": [0.01] * 8, "step": [0.01] * 4 + [0.005] * 4}
    if schedule in expected:
        assert lrs == pytest.approx(expected[schedule])
    elif schedule == "cosine":
        assert lrs[0] == pytest.approx(0.01) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.001
    else:  # onecycle: warms up to the peak, then anneals
        assert max(lrs) == pytest.approx(0.01, rel=0.3) and lrs[0] < max(lrs) and lrs[-1] < lrs[0]


def test_the_schedule_moves_the_learning_rate(tiny):
    step = run_cell(cfg(schedule="step", step_size=1, gamma=0.5, epochs=3), tiny)
    assert [e.lr for e in step.epochs] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_the_reference_torchvision_pipeline_trains_too(tiny):
    out = run_cell(cfg(loader="torchvision"), tiny)
    assert derive_status(out.epochs)[0] == "finished" and out.epochs[-1].train_samples_per_s > 0


def test_time_to_accuracy_counts_training_time_until_the_target(tiny):
    out = run_cell(cfg(epochs=4, lr=5e-3, target_accuracy=0.05), tiny)
    assert out.epochs_to_target == 1 and out.time_to_target_s == pytest.approx(out.epochs[0].train_seconds)
    never = run_cell(cfg(epochs=1, target_accuracy=1.0), tiny)
    assert never.time_to_target_s is None


class NanNet(torch.nn.Module):
    """Outputs NaN after the first step, to test divergence handling."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out * float("nan") if not self.training or self.fc.weight.grad is not None else out


def test_a_loss_that_becomes_nan_ends_the_cell_as_diverged_and_its_model_leaves_no_trace(tiny):
    before = MODELS.names()
    with MODELS.registered("test-nan-net", "outputs NaN after the first step", NanNet) as name:
        out = run_cell(cfg(model=name, epochs=3), tiny)
    status, note = derive_status(out.epochs)
    assert status == "diverged" and len(out.epochs) == 1 and "nan" in note
    assert MODELS.names() == before  # the rest of the test run sees the registry as it was


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MnistbenchError, match="device 'cuda' asked for, but PyTorch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.slow  # a full epoch of the 60,000 real images: make test-slow
def test_lenet5_learns_real_mnist_in_one_epoch(real_data):
    ds = load_dataset("mnist", real_data, allow_download=False)
    out = run_cell(CellConfig(model="lenet5", device="cpu", epochs=1, batch_size=128, lr=2e-3, schedule="onecycle"), ds)
    assert out.epochs[0].test_accuracy >= 0.97


def test_a_cells_thread_count_does_not_leak_into_the_next_cell(tiny):
    before = torch.get_num_threads()
    out = run_cell(cfg(epochs=1, threads=1), tiny)
    assert out.threads == 1 and torch.get_num_threads() == before


def test_probing_between_batches_finds_the_target_within_an_epoch_without_changing_training(tiny):
    plain = run_cell(cfg(epochs=2, lr=5e-3, target_accuracy=0.05), tiny)
    probed = run_cell(cfg(epochs=2, lr=5e-3, target_accuracy=0.05, target_eval_every=2), tiny)
    assert probed.epochs_to_target == pytest.approx(2 / 8)  # 256 samples / batch 32 = 8 batches per epoch
    assert probed.time_to_target_s < probed.epochs[0].train_seconds
    same = lambda o: [(e.train_loss, e.test_accuracy) for e in o.epochs]
    assert same(plain) == same(probed)  # probing evaluates, it does not train
