"""Where a training step's time goes, layer by layer, against the machine's two roofs (issue #27).

A model's roofline (``report.roofline``) says whether the model as a whole is compute- or memory-bound. This
module says which layers hold it back. Each layer that computes something (``models.traffic.layer_shapes``:
views such as flatten move nothing and are left out) is timed alone, on a tensor of the shape it sees in a
training step at the given batch size: its forward, and its backward (the gradients of its parameters and of
its input; the first layer's input, the images, needs none). The same calls are counted for FLOPs
(``torch.utils.flop_counter``: convolutions and matrix multiplies; element-wise layers count none) and for bytes
(``models.traffic``'s rule, per layer). Each pass then sits under its own roof: memory-bound where its FLOPs per
byte are below the machine's ridge point (peak / bandwidth), compute-bound above it, and "% of roof" is its
achieved rate against the roof that binds it.

The whole training step (forward, cross-entropy, zero_grad, backward, the engine's Adam) is timed too, on the
same model and batch: what the layers timed alone do not account for is the step's own overhead (the loss, the
optimizer, autograd's bookkeeping, allocation). The last figure, the model's ceiling, is the fraction of the
compute peak the step would reach if every pass ran exactly at its roof with no reuse between layers: the most
a faster kernel could give without fusing layers.

Some of a step does not grow with the batch: Python, PyTorch's dispatch and autograd, each kernel's set-up (oneDNN
builds a primitive descriptor on every call), the passes over the parameters (each layer reads its weights and
writes their gradients, the optimizer updates them). The whole step is timed again at batch 1, on a model of its
own: that step is the batch-independent part at most (plus one sample's work), what a larger batch spreads over
more samples. Its share of the step, and the rate at which the rest of the step runs the batch's other samples,
say how much of the distance to the peak is that part and how much the kernels.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import MnistbenchError
from .onednn import OnednnProfile

DEVICES = ("cpu", "cuda", "auto")
SEED = 0
ONEDNN_CPU_ONLY = "--onednn traces oneDNN, the CPU's kernels: use it with --device cpu"  # asked for CUDA, or auto found it


@dataclass(frozen=True)
class LayerConfig:
    """What to profile; checked when built, so a bad option is one line before anything is timed."""

    model: str = "lenet5"
    batch_size: int = 256
    repeats: int = 50
    warmup: int = 5
    device: str = "auto"
    threads: Optional[int] = None  # CPU threads (torch.set_num_threads); None: PyTorch's default
    channels_last: bool = False  # convolutions on NHWC tensors, as a spec's channels_last: true trains them
    onednn: bool = False  # also trace oneDNN's primitives in whole steps (onednn.py; CPU only)

    def __post_init__(self) -> None:
        for name in ("batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise MnistbenchError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.warmup < 0:
            raise MnistbenchError(f"--warmup must be 0 or more, not {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise MnistbenchError(f"--threads must be at least 1, not {self.threads}")
        if self.device not in DEVICES:
            raise MnistbenchError(f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.onednn and self.device == "cuda":
            raise MnistbenchError(ONEDNN_CPU_ONLY)


@dataclass(frozen=True)
class PassTiming:
    """One pass (forward or backward) of one layer over a whole batch: median seconds, FLOPs and bytes."""

    seconds: float
    flops: int
    bytes: int

    @property
    def intensity(self) -> float:
        """FLOPs per byte."""
        return self.flops / self.bytes if self.bytes else 0.0

    def roof(self, peak_gflops: float, bandwidth_gbs: float) -> tuple[str, float]:
        """The roof that binds this pass ("compute" or "memory") and the pass's achieved share of it."""
        if self.seconds <= 0:
            return ("compute" if self.intensity * bandwidth_gbs >= peak_gflops else "memory"), 0.0
        if self.flops and self.intensity * bandwidth_gbs >= peak_gflops:
            return "compute", self.flops / self.seconds / 1e9 / peak_gflops
        return "memory", self.bytes / self.seconds / 1e9 / bandwidth_gbs

    def roof_seconds(self, peak_gflops: float, bandwidth_gbs: float) -> float:
        """The time this pass would take exactly at its roof."""
        return max(self.flops / (peak_gflops * 1e9), self.bytes / (bandwidth_gbs * 1e9))


@dataclass(frozen=True)
class LayerTiming:
    layer: str
    kind: str
    forward: PassTiming
    backward: PassTiming


@dataclass
class LayerProfile:
    config: LayerConfig
    device: str
    threads: int
    peak_gflops: float
    bandwidth_gbs: float
    step_seconds: float  # median of whole training steps
    layers: list[LayerTiming]
    speedups: list[str] = field(default_factory=list)  # the engine's speed-ups that were on (speedups.SPEEDUPS)
    environment: dict = field(default_factory=dict)
    onednn: Optional[OnednnProfile] = None  # with LayerConfig.onednn: the primitives of a step (onednn.py)
    batch1_step_seconds: Optional[float] = None  # median whole step at batch 1 (None when the batch is 1)

    @property
    def layer_seconds(self) -> float:
        return sum(t.forward.seconds + t.backward.seconds for t in self.layers)

    @property
    def train_flops(self) -> int:
        return sum(t.forward.flops + t.backward.flops for t in self.layers)

    @property
    def ceiling(self) -> float:
        """The fraction of the peak a step would reach with every pass at its roof and nothing else."""
        at_roof = sum(p.roof_seconds(self.peak_gflops, self.bandwidth_gbs) for t in self.layers for p in (t.forward, t.backward))
        return self.train_flops / at_roof / 1e9 / self.peak_gflops if at_roof else 0.0

    @property
    def step_fraction_of_peak(self) -> float:
        return self.train_flops / self.step_seconds / 1e9 / self.peak_gflops if self.step_seconds else 0.0

    @property
    def batch1_share(self) -> Optional[float]:
        """A batch-1 step against the step: the share of the step that need not grow with the batch, at most."""
        if self.batch1_step_seconds is None or not self.step_seconds:
            return None
        return self.batch1_step_seconds / self.step_seconds

    @property
    def rest_fraction_of_peak(self) -> Optional[float]:
        """The fraction of the peak at which the step runs its batch's samples beyond the first: their FLOPs over
        the step's time beyond a batch-1 step. None where that time is not positive (timing noise at a small batch)."""
        if self.batch1_step_seconds is None or self.step_seconds <= self.batch1_step_seconds:
            return None
        b = self.config.batch_size
        return self.train_flops * (b - 1) / b / (self.step_seconds - self.batch1_step_seconds) / 1e9 / self.peak_gflops

    def to_dict(self) -> dict:
        d = asdict(self)
        d |= {"layer_seconds": self.layer_seconds, "train_flops_per_batch": self.train_flops,
              "step_fraction_of_peak": self.step_fraction_of_peak, "ceiling_fraction_of_peak": self.ceiling,
              "batch1_share_of_step": self.batch1_share, "rest_fraction_of_peak": self.rest_fraction_of_peak}
        return d


# --------------------------------------------------------------------------- measuring


def _layer_inputs(model, x) -> list[tuple[str, str, Any, Any]]:
    """(name, kind, module, input) of every one-input leaf layer a forward pass of ``x`` calls, in call order, as
    ``models.traffic.leaf_calls`` finds them (views such as flatten left out, and a ReLU the max-pool after it does:
    that pool's kind says +ReLU)."""
    from ..models.traffic import leaf_calls

    kind = lambda m: type(m).__name__ + ("+ReLU" if getattr(m, "relu", None) is True else "")  # noqa: E731 - folded
    return [(name, kind(module), module, ins[0].detach().clone())
            for name, module, ins, _ in leaf_calls(model, x) if len(ins) == 1]


def _time_layer(module, x, first: bool, config: LayerConfig, device) -> tuple[list[float], list[float], int, int, int]:
    """Forward and backward seconds of ``module`` on ``x`` (``warmup`` untimed rounds, then ``repeats``), the FLOPs
    of one forward and of one backward, and the output's elements per sample."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .engine import clock

    x = x.detach().requires_grad_(not first)  # the images need no gradient
    out = module(x)
    grad = torch.empty_like(out).copy_(torch.randn(out.shape, generator=torch.Generator().manual_seed(SEED)))  # out's layout
    forward, backward = [], []
    for i in range(config.warmup + config.repeats):
        for p in module.parameters():
            p.grad = None  # as zero_grad(set_to_none=True) leaves them
        t0 = clock(device)
        y = module(x)
        t1 = clock(device)
        y.backward(grad)
        t2 = clock(device)
        if i >= config.warmup:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    with FlopCounterMode(display=False) as fwd:
        y = module(x)
    with FlopCounterMode(display=False) as bwd:
        y.backward(grad)
    return forward, backward, fwd.get_total_flops(), bwd.get_total_flops(), out[0].numel()


def _time_step(model, x, y, config: LayerConfig, device) -> tuple[list[float], Callable[[], None]]:
    """Whole training steps as the engine takes them: forward, cross-entropy, zero_grad, backward, Adam (foreach);
    their times, and the step itself (to trace more of them)."""
    import torch
    import torch.nn.functional as F

    from .engine import OPTIMIZER_IMPL, clock

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **OPTIMIZER_IMPL["foreach"])

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = []
    for i in range(config.warmup + config.repeats):
        t0 = clock(device)
        step()
        t1 = clock(device)
        if i >= config.warmup:
            times.append(t1 - t0)
    return times, step


def _batch(config: LayerConfig, device, input_shape: tuple[int, ...]):
    import torch

    gen = torch.Generator(device="cpu").manual_seed(SEED)
    x = torch.randn(config.batch_size, *input_shape, generator=gen).to(device)
    if config.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (config.batch_size,), generator=gen).to(device)


def _model(config: LayerConfig, device):
    import torch

    from ..models.factory import create_model
    from .engine import fast_layers

    torch.manual_seed(SEED)
    model = create_model(config.model).to(device)
    fast_layers(model, channels_last=config.channels_last)  # the model as the engine trains it
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def profile_layers(config: LayerConfig, input_shape: tuple[int, ...] = (1, 28, 28)) -> LayerProfile:
    """Time every layer of ``config.model`` alone and the whole step, on random data of MNIST's shape."""
    import torch

    from ..environment import environment
    from ..models.traffic import LayerShape, layer_pass_bytes
    from .engine import resolve_device
    from .speedups import SPEEDUPS, speedup
    from .roofline import matmul_peak_gflops, stream_bandwidth

    device = resolve_device(config.device)
    if config.onednn and device.type != "cpu":
        raise MnistbenchError(ONEDNN_CPU_ONLY)
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        threads = torch.get_num_threads()
        model = _model(config, device)
        x, y = _batch(config, device, input_shape)
        layers = []
        for i, (name, kind, module, inp) in enumerate(_layer_inputs(model, x)):
            fwd, bwd, fwd_flops, bwd_flops, outputs = _time_layer(module, inp, i == 0, config, device)
            params = sum(p.numel() for p in module.parameters(recurse=False))
            shape = LayerShape(name, kind, inp[0].numel(), outputs, params)
            fwd_bytes, bwd_bytes = layer_pass_bytes(shape, config.batch_size, first=i == 0)
            layers.append(LayerTiming(name, kind, PassTiming(statistics.median(fwd), fwd_flops, fwd_bytes),
                                      PassTiming(statistics.median(bwd), bwd_flops, bwd_bytes)))
        times, one_step = _time_step(model, x, y, config, device)
        step = statistics.median(times)
        traced = _trace_onednn(one_step, config) if config.onednn else None
        batch1 = _batch1_step(config, device, input_shape) if config.batch_size > 1 else None
        peak = matmul_peak_gflops(str(device), threads)
        bandwidth = stream_bandwidth(str(device), threads).best_gbs
    finally:
        torch.set_num_threads(previous)
    on = [name for name in SPEEDUPS if speedup(name)]
    return LayerProfile(config, str(device), threads, peak, bandwidth, step, layers, on, environment(), traced, batch1)


def _batch1_step(config: LayerConfig, device, input_shape: tuple[int, ...]) -> float:
    """The median whole training step at batch 1, on a model of its own built the same way (the same number of
    rounds): what a step costs whatever its batch, at most."""
    one = replace(config, batch_size=1)
    x, y = _batch(one, device, input_shape)
    times, _ = _time_step(_model(one, device), x, y, one, device)
    return statistics.median(times)


def _trace_onednn(one_step: Callable[[], None], config: LayerConfig) -> OnednnProfile:
    """oneDNN's primitives over ``repeats`` more steps (after the timed ones: every primitive made and warm)."""
    from .onednn import record

    def run() -> None:
        for _ in range(config.repeats):
            one_step()

    return record(run, config.repeats)


# --------------------------------------------------------------------------- reporting


def table(profile: LayerProfile) -> str:
    """One row per pass of each layer: µs, share of the step, GFLOP/s, GB/s, FLOP/byte, the binding roof and its %."""
    from tabulate import tabulate

    peak, bw, step = profile.peak_gflops, profile.bandwidth_gbs, profile.step_seconds
    rows = []
    for t in profile.layers:
        for name, p in (("forward", t.forward), ("backward", t.backward)):
            bound, share = p.roof(peak, bw)
            rows.append([t.layer, t.kind, name, f"{p.seconds * 1e6:,.1f}", f"{p.seconds / step:.1%}",
                         f"{p.flops / p.seconds / 1e9:,.1f}" if p.flops and p.seconds else "—",
                         f"{p.bytes / p.seconds / 1e9:,.1f}" if p.seconds else "—",
                         f"{p.intensity:,.2f}", bound, f"{share:.0%}"])
    outside = step - profile.layer_seconds
    rows.append(["(rest of the step)", "loss, optimizer, autograd", "", f"{outside * 1e6:,.1f}", f"{outside / step:.1%}",
                 "", "", "", "", ""])
    headers = ["layer", "kind", "pass", "µs", "share of step", "GFLOP/s", "GB/s", "FLOP/byte", "bound", "% of roof"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def totals(profile: LayerProfile) -> str:
    c = profile.config
    return (f"Step: {profile.step_seconds * 1e6:,.1f} µs median for batch {c.batch_size} "
            f"({c.batch_size / profile.step_seconds:,.0f} samples/s), "
            f"{profile.train_flops / profile.step_seconds / 1e9:,.1f} GFLOP/s = "
            f"{profile.step_fraction_of_peak:.1%} of the {profile.peak_gflops:,.1f} GFLOP/s peak; "
            f"bandwidth {profile.bandwidth_gbs:,.1f} GB/s, ridge {profile.peak_gflops / profile.bandwidth_gbs:,.1f} FLOP/byte. "
            f"The layers timed alone take {profile.layer_seconds / profile.step_seconds:.0%} of the step. "
            f"Ceiling (every pass at its roof, nothing else): {profile.ceiling:.0%} of the peak."
            + batch1_sentence(profile))


def batch1_sentence(profile: LayerProfile) -> str:
    """What a batch-1 step says about the step (empty when the batch is 1), with a leading space."""
    if profile.batch1_share is None:
        return ""
    c, rest = profile.config, profile.rest_fraction_of_peak
    said = (f" At batch 1 a step takes {profile.batch1_step_seconds * 1e6:,.1f} µs, {profile.batch1_share:.0%} of this "
            f"one: at most that much of the step does not grow with the batch (Python, dispatch, autograd, each "
            f"kernel's set-up, the passes over the parameters: weights read, gradients written, the optimizer's update)")
    if rest is None:
        return said + "; the step is no slower than it, so nothing is said of the rest (timing noise, or a small batch)."
    return said + f"; the rest of the step runs the other {c.batch_size - 1} samples at {rest:.0%} of the peak."


def how_measured(profile: LayerProfile) -> str:
    c = profile.config
    return (
        f"{c.model} built from seed {SEED} as the engine trains it (its speed-ups on: "
        f"{', '.join(profile.speedups) or 'none'}{'; model and batch in channels_last' if c.channels_last else ''}), "
        f"{profile.threads} threads on "
        f"{profile.device}, random inputs of MNIST's shape at batch {c.batch_size}. Each layer is timed alone on the "
        f"input it sees in the model's forward pass: {c.warmup} untimed rounds, then the median of {c.repeats} "
        "rounds of its forward and of its backward (parameter gradients set to None before each, as the engine's "
        "zero_grad leaves them; the first layer computes no input gradient). Timed alone, a layer pays autograd's "
        "start-up and meets its tensors in other cache states than inside a step, so the layers' sum can exceed the "
        "step (a negative rest). FLOPs: torch.utils.flop_counter on one "
        "forward and one backward of the layer (element-wise layers count none). Bytes: models.traffic's rule for "
        "that layer (forward E·(x + y)·B + E·P, backward E·(y + 2x)·B + 2E·P, the first layer E·(y + x)·B + 2E·P; "
        "E = 4 bytes, B the batch, P the layer's parameters). Bound: compute where the pass's FLOP/byte is at or "
        "above the ridge (peak / bandwidth), memory below it; % of roof is the pass's GFLOP/s against the peak, or "
        "its GB/s against the bandwidth. Peak and bandwidth: mnistbench's matmul and STREAM calibrations "
        "(train/roofline.py) with the same threads. The step is forward, cross-entropy, zero_grad, backward and "
        "foreach Adam on the same model and batch, median of the same number of rounds; its rest is the step's time "
        "the layers timed alone do not account for. The batch-1 step is the same step on a model of its own built the "
        "same way, at batch 1, median of the same number of rounds."
    )


ONEDNN_HOW = ("Traced with oneDNN's verbose mode over as many steps as were timed, after them; each primitive's time "
              "is oneDNN's own around its execution, its share is against the median step timed without the trace. "
              "Formats are oneDNN's tags: abcd is NCHW, acdb channels-last, aBcd8b channels in blocks of 8. Linear "
              "layers' matrix multiplies go to the BLAS and are not listed.")


def onednn_section(profile: LayerProfile) -> str:
    """The oneDNN primitives of a step (with --onednn), as a table and a sentence; empty without them."""
    from . import onednn

    if profile.onednn is None:
        return ""
    return (f"{onednn.table(profile.onednn, profile.step_seconds)}\n\n{onednn.totals(profile.onednn, profile.step_seconds)}"
            f" {ONEDNN_HOW}")


def profile_markdown(profile: LayerProfile) -> str:
    from ..environment import format_environment

    c = profile.config
    layout = ", channels_last" if c.channels_last else ""
    primitives = onednn_section(profile)
    return (f"# Layer by layer: {c.model}, batch {c.batch_size}{layout}, {profile.device}\n\n{table(profile)}\n\n"
            f"{totals(profile)}\n\n" + (f"## oneDNN primitives in a step\n\n{primitives}\n\n" if primitives else "")
            + f"## How it was measured\n\n{how_measured(profile)}\n\n"
            f"## Environment\n\n```text\n{format_environment(profile.environment)}\n```\n")


def to_json(profile: LayerProfile) -> str:
    return json.dumps(profile.to_dict(), indent=2, allow_nan=False) + "\n"


def write_profile(profile: LayerProfile, out: Path) -> list[Path]:
    """Write ``layers.json`` and ``summary.md`` into ``out``, each atomically; the paths written."""
    from ..files import write_atomic
    from .stepprofile import check_out

    check_out(out)
    paths = [out / "layers.json", out / "summary.md"]
    write_atomic(paths[0], to_json(profile))
    write_atomic(paths[1], profile_markdown(profile))
    return paths
