"""Train and evaluate one cell: one model, one seed, one configuration.

Timing discipline: training time covers the optimisation steps of an epoch only,
evaluation time the test pass only; on CUDA both synchronise the device before
reading the clock. Seeds fix initialisation and shuffling, so a CPU cell repeats
exactly on the same machine and software (README, "When runs repeat").
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..data.augment import AffineRanges, DistortedBatches
from ..data.datasets import Dataset, TensorBatches, holdout, normalize, torchvision_batches
from ..errors import Interrupted, MnistbenchError
from .fastadam import FlatAdam, FlatAdamW
from .fastconv import swap_first_convs
from .fastpool import fold_relus, swap_max_pools
from .muon import Muon
from .speedups import speedup
from .memory import peak_rss_bytes, reset_peak
from ..models.factory import build_model, load_unchanged
from ..results import EpochMetrics
from ..spec.schema import CellConfig


@dataclass
class CellOutcome:
    epochs: list[EpochMetrics]
    device: str
    threads: int
    time_to_target_s: Optional[float] = None  # training seconds until test accuracy first reached target_accuracy
    epochs_to_target: Optional[float] = None  # fractional when probed between batches
    wall_to_target_s: Optional[float] = None  # wall clock from the first step through that evaluation (MLPerf's clock)
    peak_memory_bytes: Optional[int] = None
    peak_rss_bytes: Optional[int] = None  # the process's RSS high-water mark while the cell ran on the CPU (memory.py)
    determinism: Optional[dict] = None  # environment.determinism() while the cell ran
    weights: Optional[dict[str, torch.Tensor]] = None  # the evaluated model's final state dict, on the CPU


@dataclass
class ResumeState:
    """Everything needed to continue a cell after a finished epoch; checkpoint.py only serialises it."""

    epochs: list[EpochMetrics]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: Optional[dict[str, Any]]
    generator: torch.Tensor
    time_to_target_s: Optional[float] = None
    epochs_to_target: Optional[float] = None
    distort_generator: Optional[torch.Tensor] = None  # state of the distortions' generator, with distort: true
    wall_to_target_s: Optional[float] = None
    ema: Optional[dict[str, torch.Tensor]] = None  # state of the weight average, with ema set


class ResumeError(Exception):
    """A checkpoint's state does not fit the cell's model, optimizer or schedule."""


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Per-parameter state loaded from a checkpoint has each parameter's shape (PyTorch does not check it)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(f"optimizer state {name} has shape {tuple(value.shape)}, its parameter {tuple(p.shape)}")


EpochHook = Callable[[EpochMetrics, Callable[[], ResumeState]], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistbenchError("device 'cuda' asked for, but PyTorch sees no CUDA GPU here (use device: cpu or auto)")
    return torch.device(name)


# PyTorch's implementations of an optimizer's update: one loop per parameter, batched over parameters, or one fused kernel.
OPTIMIZER_IMPL = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def fast_layers(model: torch.nn.Module, channels_last: bool = False) -> None:
    """Swap in the layers that compute the same values and gradients faster on the CPU (fastpool.py, fastconv.py; a
    ReLU just before a 2x2 max-pool done by the pool), as SPEEDUPS has them on; ``channels_last`` models keep their
    first convolution (it has its kernel already)."""
    if speedup("fast-pool"):
        swap_max_pools(model, planes=speedup("pool-planes"))
        if speedup("pool-relu"):
            fold_relus(model)
    if speedup("fast-conv1") and not channels_last:
        swap_first_convs(model)


def build_optimizer(config: CellConfig, params) -> torch.optim.Optimizer:
    impl = OPTIMIZER_IMPL[config.optimizer_impl]
    if config.optimizer_impl == "default" and speedup("foreach"):
        # PyTorch's default on the CPU is the loop over parameters; the batched update does the same arithmetic in
        # the same order (bit-identical weights, tests/test_engine_speedups.py) with one dispatch per operation, not per tensor.
        impl = OPTIMIZER_IMPL["foreach"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **impl)
    if (config.optimizer in ("adam", "adamw") and config.optimizer_impl == "default" and speedup("foreach")
            and speedup("fast-adam")):
        # The batched update over one flat copy of the moments: the same bits where a probe shows it (fastadam.py).
        flat = FlatAdam if config.optimizer == "adam" else FlatAdamW
        return flat(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "muon":  # Muon for weight matrices and filters, Adam (optimizer_impl) for the rest: muon.py
        return Muon(params, lr=config.lr, momentum=config.momentum, ns_steps=config.ns_steps,
                    weight_decay=config.weight_decay, foreach=impl.get("foreach", True), fused=impl.get("fused", False))
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **impl)
    if config.optimizer == "adadelta":  # PyTorch's defaults (rho 0.9, eps 1e-6), as pytorch/examples uses them
        return torch.optim.Adadelta(params, lr=config.lr, weight_decay=config.weight_decay, **impl)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **impl)


def build_scheduler(config: CellConfig, optimizer, train_samples: int):
    """All schedules step once per batch, so they behave the same at every batch size."""
    steps = config.steps_per_epoch(train_samples)
    total = sum(steps)
    if config.schedule == "step":  # equal epochs (a batch-size ramp is refused with it)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size * steps[0], gamma=config.gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "onecycle":
        cycles_momentum = "momentum" in optimizer.defaults or "betas" in optimizer.defaults  # not Adadelta's
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=config.warmup,
                                                   cycle_momentum=cycles_momentum)
    return None


def weight_average(config: CellConfig, model: torch.nn.Module):
    """With ``ema``, an exponential moving average of the model's weights (torch.optim.swa_utils), updated after
    every step inside the timed loop and evaluated instead of the weights; else None."""
    if config.ema is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)


def training_loss(config: CellConfig) -> Callable:
    """Cross-entropy, with ``label_smoothing`` when set (evaluation always reports the plain cross-entropy)."""
    if config.label_smoothing:
        return functools.partial(F.cross_entropy, label_smoothing=config.label_smoothing)
    return F.cross_entropy


def make_batches(config: CellConfig, dataset: Dataset, device: torch.device):
    """Training batches (shuffled by the cell's seed) and evaluation batches for the configured loader.

    With ``validation: N`` the last N training samples are held out and evaluated instead of the test set.
    """
    n_val = config.validation
    if config.loader == "torchvision":
        train_split, test_split = holdout(dataset.train, n_val) if n_val else (dataset.train, dataset.test)
        train = torchvision_batches(train_split, dataset.info, config.batch_size, config.seed)
        test = torchvision_batches(test_split, dataset.info, config.eval_batch_size, None)
        return train, test
    x_train, y_train = normalize(dataset.train, dataset.info, device)
    if n_val:  # views of the shared normalized tensor, no copy
        cut = len(y_train) - n_val
        x_train, y_train, x_test, y_test = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    else:
        x_test, y_test = normalize(dataset.test, dataset.info, device)
    return (
        TensorBatches(x_train, y_train, config.batch_size, config.seed),
        TensorBatches(x_test, y_test, config.eval_batch_size),
    )


def clock(device: torch.device) -> float:
    """The time in seconds, read after the device has finished its queued work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def autocast(config: CellConfig, device: torch.device):
    """bf16 autocast for the forward pass and loss when asked for; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def train_epoch(
    model, batches, optimizer, scheduler, device, should_stop=None, autocast_ctx=None, probe=None, probe_every: int = 0,
    loss_fn: Callable = F.cross_entropy, after_step: Optional[Callable[[], None]] = None, steps: Optional[int] = None,
) -> tuple[float, float, float, int]:
    """One pass over the training set (or its first ``steps`` batches): mean loss, accuracy, seconds of training and
    the number of samples trained on.

    ``should_stop()`` is polled between batches; when it answers a signal number the
    epoch is abandoned (nothing of it is kept) by raising ``Interrupted``.
    ``probe(step, seconds)`` is called every ``probe_every`` batches with the training
    seconds so far; the clock is stopped while it runs, so it costs no training time.
    ``after_step()`` runs after every optimizer step, inside the timed loop.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seconds = 0.0
    samples = 0
    start = clock(device)
    for step, (x, y) in enumerate(batches, start=1):
        if steps is not None and step > steps:
            break
        if should_stop is not None and should_stop():
            raise Interrupted(should_stop())
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_ctx or contextlib.nullcontext():
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        # Accumulate on the device: no host sync inside the loop.
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        samples += len(y)
        if probe is not None and probe_every and step % probe_every == 0:
            seconds += clock(device) - start
            probe(step, seconds)
            model.train()
            start = clock(device)
    seconds += clock(device) - start
    return loss_sum.item() / samples, correct.item() / samples, seconds, samples


@torch.inference_mode()
def evaluate(model, batches, device, autocast_ctx=None) -> tuple[float, float, float]:
    """Mean loss, accuracy and seconds over a test set."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    start = clock(device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_ctx or contextlib.nullcontext():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    seconds = clock(device) - start
    n = batches.num_samples
    return loss_sum.item() / n, correct.item() / n, seconds


def run_cell(
    config: CellConfig,
    dataset: Dataset,
    on_epoch: Optional[EpochHook] = None,
    resume: Optional[ResumeState] = None,
    should_stop: Optional[Callable[[], int]] = None,
) -> CellOutcome:
    """Train ``config.model`` for ``config.epochs`` epochs, evaluating after each.

    ``on_epoch(metrics, state)`` is called after every epoch; ``state()`` returns
    what a checkpoint needs to resume. With ``resume``, training continues after
    the last epoch it holds and ends with the metrics of an uninterrupted run.
    Training stops after the first epoch with a non-finite loss (the caller
    records the cell as diverged from its metrics).
    """
    device = resolve_device(config.device)
    from ..environment import determinism

    with cell_settings(config):
        outcome = _run(config, dataset, device, on_epoch, resume, should_stop)
        outcome.determinism = determinism()  # as the cell ran, before its settings are restored
        return outcome


@contextlib.contextmanager
def cell_settings(config: CellConfig):
    """The process-wide torch settings a cell asks for, restored afterwards so none leaks into the next cell."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it reads this when its handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = cudnn_benchmark


def diverged(epochs: list[EpochMetrics]) -> bool:
    return any(not (math.isfinite(e.train_loss) and math.isfinite(e.test_loss)) for e in epochs)


def distorted_batches(config: CellConfig, train_batches, dataset: Dataset, device: torch.device) -> Optional[DistortedBatches]:
    """With ``distort``, the training batches randomly distorted as they are taken (inside the timed loop: part of the
    training cost); else None."""
    if not config.distort:
        return None
    background = -dataset.info.mean / dataset.info.std  # a blank pixel, normalized
    return DistortedBatches(train_batches, AffineRanges.of(config), config.seed, background, device)


def restore(resume: ResumeState, t: "_Training") -> None:
    """Load a checkpoint's state into a freshly built cell; ResumeError if it does not fit."""
    model, optimizer, scheduler, train_batches, distorted = t.model, t.optimizer, t.scheduler, t.train_batches, t.distorted
    try:
        if (resume.ema is None) != (t.average is None):
            raise ValueError("the checkpoint's weight average (ema) does not match the cell's")
        if t.average is not None:
            t.average.load_state_dict(resume.ema)
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        check_optimizer_state(optimizer)
        if scheduler is not None and resume.scheduler is not None:
            scheduler.load_state_dict(resume.scheduler)
        train_batches.generator.set_state(resume.generator)
        if distorted is not None:
            if resume.distort_generator is None:
                raise ValueError("the checkpoint holds no state of the distortions' generator")
            distorted.generator.set_state(resume.distort_generator)
    except Exception as e:  # noqa: BLE001 - whatever a checkpoint's state breaks, the checkpoint is bad (e.g. AttributeError)
        raise ResumeError((str(e).splitlines() or [type(e).__name__])[0][:120]) from None


@dataclass
class _Training:
    """What one cell trains with: its model (and compiled step model), optimizer, schedule and batches."""

    config: CellConfig
    device: torch.device
    model: torch.nn.Module
    step_model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_batches: Any
    test_batches: Any
    distorted: Any  # distorted training batches, or None
    average: Any = None  # the weight average (AveragedModel) with ema set, else None
    epoch_steps: Optional[int] = None  # the steps of the epoch under way with max_steps, else None (all its batches)

    def state(self, outcome: CellOutcome) -> ResumeState:
        return ResumeState(
            epochs=list(outcome.epochs),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
            generator=self.train_batches.generator.get_state(),
            time_to_target_s=outcome.time_to_target_s,
            epochs_to_target=outcome.epochs_to_target,
            distort_generator=None if self.distorted is None else self.distorted.generator.get_state(),
            wall_to_target_s=outcome.wall_to_target_s,
            ema=None if self.average is None else self.average.state_dict(),
        )

    def final_weights(self) -> dict[str, torch.Tensor]:
        """The state dict of the model the test pass judged (the weight average with ``ema``), contiguous on the CPU."""
        judged = self.model if self.average is None else self.average.module
        return {k: v.detach().to("cpu").contiguous() for k, v in judged.state_dict().items()}

    def evaluate(self) -> tuple[float, float, float]:
        """The test pass of the model as trained, or of its weight average with ``ema``."""
        judged = self.step_model if self.average is None else self.average.module
        return evaluate(judged, self.test_batches, self.device, autocast(self.config, self.device))

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch's batch size (it changes only with a batch-size ramp, which needs tensor batches) and, with
        ``max_steps``, its number of steps."""
        if self.config.batch_size_start is not None:
            self.train_batches.batch_size = self.config.epoch_batch_size(epoch)
        self.epoch_steps = None
        if self.config.max_steps is not None:
            self.epoch_steps = self.config.steps_per_epoch(self.train_batches.num_samples)[epoch - 1]

    def train(self, should_stop, probe) -> tuple[float, float, float, int]:
        config = self.config
        average = self.average
        return train_epoch(
            self.step_model, self.train_batches if self.distorted is None else self.distorted, self.optimizer, self.scheduler,
            self.device, should_stop, autocast(config, self.device), probe=probe, probe_every=config.target_eval_every or 0,
            loss_fn=training_loss(config), after_step=None if average is None else lambda: average.update_parameters(self.model),
            steps=self.epoch_steps,
        )


def _prepare(config: CellConfig, dataset: Dataset, device: torch.device) -> _Training:
    """Seed, build the model, batches, optimizer and schedule of a cell, in the order that makes it repeat."""
    source = load_unchanged(config.model, config.base_dir, config.model_sha256)
    torch.manual_seed(config.seed)
    model = build_model(source).to(device)
    if not config.compile:  # torch.compile generates its own kernels
        fast_layers(model, channels_last=config.channels_last)
    train_batches, test_batches = make_batches(config, dataset, device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        for batches in (train_batches, test_batches):
            if isinstance(batches, TensorBatches):
                batches.x = batches.x.contiguous(memory_format=torch.channels_last)
    distorted = distorted_batches(config, train_batches, dataset, device)
    # The compiled module shares parameters with ``model``; checkpoints keep the plain state dict.
    step_model = torch.compile(model) if config.compile else model
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer, train_batches.num_samples)
    return _Training(config, device, model, step_model, optimizer, scheduler, train_batches, test_batches, distorted,
                     weight_average(config, model))


def _run(config: CellConfig, dataset: Dataset, device: torch.device, on_epoch, resume, should_stop) -> CellOutcome:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = device.type == "cpu" and reset_peak()
    t = _prepare(config, dataset, device)
    outcome = CellOutcome([], str(device), torch.get_num_threads())
    if resume is not None:
        restore(resume, t)
        outcome.epochs = list(resume.epochs)
        outcome.time_to_target_s, outcome.epochs_to_target = resume.time_to_target_s, resume.epochs_to_target
        outcome.wall_to_target_s = resume.wall_to_target_s
    first = config.epochs + 1 if diverged(outcome.epochs) else len(outcome.epochs) + 1  # never train on from a NaN
    for epoch in range(first, config.epochs + 1):
        if config.stop_at_target and outcome.time_to_target_s is not None:
            break  # MLPerf-style: the run ends at its first evaluation at or above the target
        metrics = _epoch(t, epoch, outcome, should_stop)
        if on_epoch is not None:
            on_epoch(metrics, lambda: t.state(outcome))
        if diverged([metrics]):
            break
    if device.type == "cuda":
        outcome.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
    outcome.peak_rss_bytes = peak_rss_bytes() if rss_reset else None
    outcome.weights = t.final_weights()
    return outcome


def _epoch(t: _Training, epoch: int, outcome: CellOutcome, should_stop) -> EpochMetrics:
    """Train one epoch and evaluate; append its metrics to ``outcome`` and note when the target was first reached.

    Two clocks: training seconds (stopped during probes and evaluation) for the first-crossing rule, and the wall
    clock of the training loop with every probe and evaluation for the MLPerf rule (``wall_to_target_s``).
    """
    config = t.config
    trained_before = sum(e.train_seconds for e in outcome.epochs)
    walled_before = sum(e.wall_seconds or (e.train_seconds + e.eval_seconds) for e in outcome.epochs)
    t.start_epoch(epoch)
    wall_start = clock(t.device)

    def reached(train_seconds: float, epochs: float) -> None:
        outcome.time_to_target_s, outcome.epochs_to_target = trained_before + train_seconds, epochs
        outcome.wall_to_target_s = walled_before + clock(t.device) - wall_start

    def probe(step: int, seconds: float) -> None:
        """Between batches: has the test accuracy reached the target yet? (untimed; only until it has)"""
        if outcome.time_to_target_s is None and t.evaluate()[1] >= config.target_accuracy:
            reached(seconds, epoch - 1 + step / len(t.train_batches))

    probing = config.target_accuracy is not None and config.target_eval_every is not None
    lr = t.optimizer.param_groups[0]["lr"]
    train_loss, train_acc, train_s, samples = t.train(should_stop, probe if probing else None)
    test_loss, test_acc, eval_s = t.evaluate()
    if config.target_accuracy is not None and outcome.time_to_target_s is None and test_acc >= config.target_accuracy:
        reached(train_s, epoch - 1 + samples / t.train_batches.num_samples)  # a whole epoch, or the part max_steps left
    wall_s = clock(t.device) - wall_start
    metrics = EpochMetrics(epoch, train_loss, train_acc, test_loss, test_acc, train_s, eval_s,
                           samples / train_s, t.test_batches.num_samples / eval_s, lr, wall_s)
    outcome.epochs.append(metrics)
    return metrics
