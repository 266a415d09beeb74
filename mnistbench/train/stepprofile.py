"""Per-step overhead of training: each phase of a step timed on its own, across optimizer and data-path settings.

A step is six phases, each between two clock reads (the device synchronized before each read on CUDA):
batch (take the shuffled batch), forward + loss, zero_grad, backward, optimizer step, and accumulating the
loss and accuracy on the device. Every configuration trains the same model from the same seed on batches
shuffled with the same seed, the configurations taking turns; each differs from the baseline (for-loop Adam,
``set_to_none=True``, batches indexed from the device tensor) in one setting.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import MnistbenchError

PHASES = ("batch", "forward", "zero_grad", "backward", "step", "accumulate")
PHASE_TITLES = {"batch": "batch", "forward": "forward+loss", "zero_grad": "zero_grad", "backward": "backward",
                "step": "optimizer step", "accumulate": "accumulate"}
DEVICES = ("cpu", "cuda", "auto")
LR = 1e-3  # Adam's default, as the specs use it
SEED = 0
ROUND = 10  # timed steps of one configuration before the next one's turn
NO_CUDA = "n/a: no CUDA device"


@dataclass(frozen=True)
class Variant:
    """One configuration: the Adam implementation (engine.OPTIMIZER_IMPL's names), zero_grad's mode, the batch source."""

    name: str
    adam: str  # for-loop | foreach | fused | flat (the engine's default: fastadam.FlatAdam)
    set_to_none: bool
    batches: str  # tensor: indexing the device tensor; pinned: host indexing into a pinned buffer; torchvision: DataLoader


BASELINE = Variant("baseline", "for-loop", True, "tensor")
VARIANTS = (
    BASELINE,
    Variant("foreach Adam", "foreach", True, "tensor"),
    Variant("fused Adam", "fused", True, "tensor"),
    Variant("flat Adam (the engine's)", "flat", True, "tensor"),
    Variant("zero_grad(set_to_none=False)", "for-loop", False, "tensor"),
    Variant("pinned host buffers", "for-loop", True, "pinned"),
    Variant("DataLoader (torchvision)", "for-loop", True, "torchvision"),
)


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile; checked when built, so a bad option is one line before any data is read."""

    model: str = "lenet5"  # what a spec's ``model:`` may say; a file reference is relative to the working folder
    batch_size: int = 64
    steps: int = 300
    warmup: int = 30
    device: str = "auto"
    data_dir: Optional[Path] = None

    def __post_init__(self) -> None:
        from ..models.factory import parse_model_ref

        try:  # an unknown name fails here, listing the known ones; a reference (./nets.py:build) is loaded later
            parse_model_ref(self.model)
        except ValueError as e:
            raise MnistbenchError(str(e)) from None
        for option, value, least in (("--batch-size", self.batch_size, 1), ("--steps", self.steps, 1),
                                     ("--warmup", self.warmup, 0)):
            if value < least:
                raise MnistbenchError(f"{option} {value}: expected a whole number of at least {least}")
        if self.device not in DEVICES:
            raise MnistbenchError(f"--device {self.device}: expected one of {', '.join(DEVICES)}")


@dataclass
class VariantResult:
    """One configuration's per-step times in microseconds (median and mean of each phase), or why it was not run."""

    variant: Variant
    median_us: dict[str, float] = field(default_factory=dict)
    mean_us: dict[str, float] = field(default_factory=dict)
    step_median_us: float = 0.0
    step_mean_us: float = 0.0
    train_loss: Optional[float] = None  # mean over the timed steps: equal across configurations that train alike
    train_accuracy: Optional[float] = None
    skipped: Optional[str] = None

    def share(self, phase: str) -> float:
        """The phase's part of the step: its median over the sum of the phases' medians."""
        total = sum(self.median_us.values())
        return self.median_us[phase] / total if total > 0 else 0.0

    def to_dict(self) -> dict:
        v = self.variant
        out = {"name": v.name, "adam": v.adam, "set_to_none": v.set_to_none, "batches": v.batches, "skipped": self.skipped}
        if self.skipped is None:
            out.update(median_us=self.median_us, mean_us=self.mean_us, share={p: self.share(p) for p in PHASES},
                       step_median_us=self.step_median_us, step_mean_us=self.step_mean_us, train_loss=self.train_loss,
                       train_accuracy=self.train_accuracy)
        return out


@dataclass
class StepProfile:
    """A profile as data: what was asked, where it ran, each configuration's result, the environment."""

    config: ProfileConfig
    device: str
    torch_version: str
    train_samples: int
    results: list[VariantResult]
    environment: dict

    def to_dict(self) -> dict:
        c = self.config
        return {"model": c.model, "batch_size": c.batch_size, "steps": c.steps, "warmup": c.warmup, "round_steps": ROUND,
                "device": self.device,
                "torch": self.torch_version, "train_samples": self.train_samples, "phases": list(PHASES),
                "configurations": [r.to_dict() for r in self.results], "environment": self.environment}


# --------------------------------------------------------------------------- measuring


def _rng_state(device) -> tuple:
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device, state: tuple) -> None:
    import torch

    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def _endless(batches) -> Iterator[tuple]:
    while True:  # a new epoch (and reshuffle) whenever one ends; a split is never empty
        yield from batches


def _pinned_batches(dataset, device, batch_size: int) -> Iterator[tuple]:
    """Index the normalized host tensor into pinned buffers and copy them to the device without blocking.

    The order is TensorBatches' for the same seed. Refilling a buffer is safe because the profiler's clock
    synchronizes the device, so the previous copy has finished.
    """
    import torch

    from ..data.datasets import normalize

    x, y = normalize(dataset.train, dataset.info, "cpu")
    bx = torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype).pin_memory()
    by = torch.empty(batch_size, dtype=y.dtype).pin_memory()
    generator = torch.Generator().manual_seed(SEED)
    while True:
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            n = len(idx)
            torch.index_select(x, 0, idx, out=bx[:n])
            torch.index_select(y, 0, idx, out=by[:n])
            yield bx[:n].to(device, non_blocking=True), by[:n].to(device, non_blocking=True)


def batch_source(batches: str, dataset, device, batch_size: int, normalized: tuple) -> Iterator[tuple]:
    """Endless shuffled training batches (seed 0) of one kind; the tensor path indexes ``normalized``, the training
    split normalized on the device once for every configuration."""
    from ..data.datasets import TensorBatches, torchvision_batches

    if batches == "tensor":
        return _endless(TensorBatches(*normalized, batch_size, SEED))
    if batches == "pinned":
        return _pinned_batches(dataset, device, batch_size)
    return _endless(torchvision_batches(dataset.train, dataset.info, batch_size, SEED))


@dataclass
class Trainer:
    """One configuration under measurement: its model, Adam and batches, and the per-step phase times so far."""

    variant: Variant
    model: Any
    optimizer: Any
    batches: Iterator[tuple]
    device: Any
    times: list[tuple[float, ...]] = field(default_factory=list)
    loss_sum: Any = None  # summed on the device over the timed steps, with the count of right answers
    correct: Any = None
    samples: int = 0
    rng: Any = None  # this configuration's random state (dropout), kept apart while the configurations take turns

    @classmethod
    def build(cls, variant: Variant, model_name: str, dataset, device, batch_size: int, normalized: tuple) -> "Trainer":
        """The model from seed 0 and its Adam, so every configuration starts from the same weights."""
        import torch

        from .engine import OPTIMIZER_IMPL, fast_layers
        from .fastadam import FlatAdam
        from ..models.factory import create_model

        torch.manual_seed(SEED)
        model = create_model(model_name).to(device)
        fast_layers(model)  # the model as the engine trains it
        model.train()
        optimizer = (FlatAdam(model.parameters(), lr=LR) if variant.adam == "flat"
                     else torch.optim.Adam(model.parameters(), lr=LR, **OPTIMIZER_IMPL[variant.adam]))
        trainer = cls(variant, model, optimizer, batch_source(variant.batches, dataset, device, batch_size, normalized), device)
        trainer.rng = _rng_state(device)
        return trainer

    def train(self, steps: int) -> None:
        """Train ``steps`` steps, appending each one's phase seconds (PHASES order) to ``times``."""
        import torch
        import torch.nn.functional as F

        from .engine import clock

        device, optimizer = self.device, self.optimizer
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), device=device)
            self.correct = torch.zeros((), device=device, dtype=torch.long)
        _set_rng_state(device, self.rng)
        for _ in range(steps):
            t0 = clock(device)
            x, y = next(self.batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # a no-op for device tensors
            t1 = clock(device)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            t2 = clock(device)
            optimizer.zero_grad(set_to_none=self.variant.set_to_none)
            t3 = clock(device)
            loss.backward()
            t4 = clock(device)
            optimizer.step()
            t5 = clock(device)
            # Accumulated on the device, as engine.train_epoch does: no host sync inside the loop.
            self.loss_sum += loss.detach() * len(y)
            self.correct += (logits.detach().argmax(1) == y).sum()
            t6 = clock(device)
            self.samples += len(y)
            self.times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5))
        self.rng = _rng_state(device)

    def forget(self) -> None:
        """Drop what the warm-up steps measured."""
        self.times, self.loss_sum, self.correct, self.samples = [], None, None, 0

    def result(self) -> VariantResult:
        columns = list(zip(*self.times))
        totals = [sum(step) for step in self.times]
        loss = self.loss_sum.item() / self.samples
        accuracy = self.correct.item() / self.samples
        return VariantResult(
            self.variant,
            median_us={p: statistics.median(col) * 1e6 for p, col in zip(PHASES, columns)},
            mean_us={p: statistics.fmean(col) * 1e6 for p, col in zip(PHASES, columns)},
            step_median_us=statistics.median(totals) * 1e6,
            step_mean_us=statistics.fmean(totals) * 1e6,
            train_loss=loss if math.isfinite(loss) else None,
            train_accuracy=accuracy,
        )


def measure(trainers: list[Trainer], steps: int, warmup: int) -> None:
    """Warm every configuration up, then time ``steps`` steps of each, ROUND steps of each in turn.

    Interleaving lets the slow phases of a shared machine hit every configuration alike.
    """
    for t in trainers:
        t.train(warmup)
        t.forget()
    for done in range(0, steps, ROUND):
        for t in trainers:
            t.train(min(ROUND, steps - done))


def profile_steps(config: ProfileConfig, dataset=None) -> StepProfile:
    """Profile every configuration on ``config``'s data (or ``dataset``, already loaded)."""
    import torch

    from ..data.datasets import load_dataset, normalize
    from .engine import resolve_device
    from ..environment import environment
    from ..models.factory import create_model

    device = resolve_device(config.device)
    create_model(config.model)  # a reference that cannot be built, or gives no 10 logits, fails before the data is read
    if dataset is None:
        dataset = load_dataset("mnist", config.data_dir)
    # Pinning needs CUDA: never called without it.
    runnable = [v for v in VARIANTS if v.batches != "pinned" or device.type == "cuda"]
    normalized = normalize(dataset.train, dataset.info, device)
    trainers = {v: Trainer.build(v, config.model, dataset, device, config.batch_size, normalized) for v in runnable}
    measure(list(trainers.values()), config.steps, config.warmup)
    results = [trainers[v].result() if v in trainers else VariantResult(v, skipped=NO_CUDA) for v in VARIANTS]
    return StepProfile(config, str(device), torch.__version__, len(dataset.train), results, environment())


# --------------------------------------------------------------------------- reporting


def table(profile: StepProfile) -> str:
    """The configurations as a GitHub-markdown table: median µs per phase (share of the step), step total, speed-up."""
    from tabulate import tabulate

    base = next(r for r in profile.results if r.variant == BASELINE)
    rows = []
    for r in profile.results:
        v = r.variant
        settings = [v.name, v.adam, str(v.set_to_none), v.batches]
        if r.skipped:
            rows.append(settings + [r.skipped] + [""] * (len(PHASES) + 1))
            continue
        phases = [f"{r.median_us[p]:,.1f} ({r.share(p):.0%})" for p in PHASES]
        speedup = base.step_median_us / r.step_median_us if r.step_median_us > 0 else 0.0
        rows.append(settings + phases + [f"{r.step_median_us:,.1f}", f"{speedup:.2f}x"])
    headers = ["configuration", "Adam", "set_to_none", "batches"] + [PHASE_TITLES[p] for p in PHASES]
    return tabulate(rows, headers=headers + ["step (µs)", "vs baseline"], tablefmt="github", disable_numparse=True)


def how_measured(profile: StepProfile) -> str:
    c = profile.config
    sync = " The device is synchronized before every clock read, which removes the overlap of host and GPU; " \
           "the step totals are therefore longer than in unsynchronized training." if profile.device.startswith("cuda") else ""
    return (
        f"Each configuration builds {c.model} from seed {SEED}, trains it with Adam (lr {LR:g}) on the normalized MNIST "
        f"training split ({profile.train_samples:,} samples, shuffled with seed {SEED}) for {c.warmup} untimed steps, "
        f"then times {c.steps} steps of batch {c.batch_size} on {profile.device}, phase by phase with "
        "time.perf_counter: batch (take the shuffled batch and move it to the device), forward+loss (the model and "
        "F.cross_entropy), zero_grad, backward, optimizer step, and accumulate (the loss and accuracy summed on the "
        "device). Cells are the median µs of the phase per step and, in brackets, its share of the sum of the "
        "phases' medians; step is the median of the steps' totals, and vs baseline the baseline's step over this one "
        "(above 1x is faster). Each configuration differs from the baseline (for-loop Adam, set_to_none=True, "
        f"batches indexed from the tensor on the device) in one setting. All run in one process and take turns, "
        f"{ROUND} timed steps each, so the slow phases of a shared machine hit them alike."
        + sync
    )


def profile_markdown(profile: StepProfile) -> str:
    """summary.md: title, table, how it was measured, and the environment as `mnistbench env` prints it."""
    from ..environment import format_environment

    c = profile.config
    return (f"# Per-step overhead: {c.model}, batch {c.batch_size}, {profile.device}\n\n{table(profile)}\n\n"
            f"## How it was measured\n\n{how_measured(profile)}\n\n"
            f"## Environment\n\n```text\n{format_environment(profile.environment)}\n```\n")


def to_json(profile: StepProfile) -> str:
    """The profile as strict JSON (a non-finite number is an error, never NaN in the file)."""
    return json.dumps(profile.to_dict(), indent=2, allow_nan=False) + "\n"


def check_out(out: Path) -> None:
    """``--out`` must be a folder or not exist yet (checked before the minutes of profiling, and again when writing)."""
    if out.exists() and not out.is_dir():
        raise MnistbenchError(f"--out {out}: not a folder")


def write_profile(profile: StepProfile, out: Path) -> list[Path]:
    """Write ``profile.json`` and ``summary.md`` into ``out``, each atomically; the paths written."""
    from ..files import write_atomic

    check_out(out)
    paths = [out / "profile.json", out / "summary.md"]
    write_atomic(paths[0], to_json(profile))
    write_atomic(paths[1], profile_markdown(profile))
    return paths
