"""The story of an inference run: every finished cell's weights x every backend -> ``BackendRun`` rows.

Reads run records and weights; never imports the training side (run/, engine) and never trains.
"""

from __future__ import annotations

import copy
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..data.datasets import load_dataset, normalize
from ..errors import MnistbenchError, reason
from ..models.names import display_name
from ..results import RunRecord
from ..weights import finished_runs, trained_model
from .backends import BackendContext, backend, eager
from .measure import PeakMemory, offline, predict_all, single_stream
from .options import ACCURACY_FLOOR, InferOptions
from .result import BackendRun, Gate, InferenceResult

CALIBRATION_SEED = 0
EXAMPLE_IMAGES = 16  # test images of the export's equal-outputs check


@dataclass
class Trained:
    run_file: Path
    record: RunRecord
    model: torch.nn.Module  # fp32, weights loaded and checked
    timed: bool  # within the first timing_seeds seeds of its model


@dataclass
class TestSet:
    images: torch.Tensor  # normalized, N x 1 x 28 x 28, on the CPU
    labels: np.ndarray
    calibration: np.ndarray  # normalized training images (int8's calibration set)


def load_trained(folder: Path, options: InferOptions) -> list[Trained]:
    """Every finished cell's model with its weights, all checked before anything is measured (a bad file: one line)."""
    seen: dict[str, int] = {}
    out = []
    for path, record in finished_runs(folder, "measure"):
        name = display_name(record.config["model"])
        model = trained_model(path, record)
        seen[name] = seen.get(name, 0) + 1
        out.append(Trained(path, record, model, options.timing_seeds is None or seen[name] <= options.timing_seeds))
    return out


def load_test_set(trained: list[Trained], options: InferOptions, data_dir) -> tuple[TestSet, dict, list[str]]:
    datasets = {t.record.config.get("dataset", "mnist") for t in trained}
    if len(datasets) != 1:
        raise MnistbenchError(f"the runs use several datasets ({', '.join(sorted(datasets))}): measure one at a time")
    dataset = load_dataset(datasets.pop(), data_dir, allow_download=True)
    x, y = normalize(dataset.test, dataset.info, "cpu")
    train_x, _ = normalize(dataset.train, dataset.info, "cpu")
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(CALIBRATION_SEED))
    calibration = train_x[pick[:options.calibration_samples]].numpy().copy()
    from ..data.datasets import content_hashes
    from ..results import data_identity

    identity = data_identity(content_hashes(dataset))  # as training records it: the decompressed files' content
    warnings = sorted({f"{t.run_file.name}: trained on data {t.record.data.get('identity')}, measured on {identity}"
                       for t in trained if t.record.data.get("identity") not in (None, identity)})
    info = {"dataset": dataset.info.name, "identity": identity, "official": dataset.official, "test_images": len(y)}
    return TestSet(x, y.numpy(), calibration), info, warnings


def gate(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Gate:
    """Accuracy on every test image against the same weights in eager fp32; flagged below 99.9% of it."""
    accuracy = float((logits.argmax(1) == labels).mean())
    fp32 = float((reference.argmax(1) == labels).mean())
    return Gate(accuracy, fp32, accuracy - fp32, float(np.abs(logits - reference).max()), accuracy < ACCURACY_FLOOR * fp32)


@contextmanager
def thread_budget(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(name: str, t: Trained, ctx: BackendContext, data: TestSet, reference: np.ndarray,
            options: InferOptions) -> BackendRun:
    """One backend on one trained model: prepare, batch-1 latency, throughput per batch size, accuracy gate."""
    b = backend(name)
    row = BackendRun(t.record.cell, display_name(t.record.config["model"]), t.record.seed, name, "ok",
                     weights_sha256=t.record.extra["weights"]["sha256"], parameters=sum(p.numel() for p in t.model.parameters()))
    if b.missing():
        row.status, row.reason = "not installed", f"pip install 'mnistbench[infer]' (missing: {', '.join(b.missing())})"
        return row
    tracker = PeakMemory(ctx.device)
    try:
        with tracker.over("prepare"):
            start = time.perf_counter()
            prepared = b.prepare(copy.deepcopy(t.model), ctx)
            prepare_s = time.perf_counter() - start
        if t.timed:
            with tracker.over("latency"):
                row.startup, row.latency = single_stream(prepared, data.images, prepare_s, options.min_queries,
                                                         options.min_seconds, options.warmup_queries)
            for size in options.batch_sizes:
                with tracker.over(f"batch {size}"):
                    row.throughput.append(offline(prepared, data.images, size, options.throughput_seconds))
        with tracker.over("accuracy"):
            row.gate = gate(predict_all(prepared, data.images), reference, data.labels)
    except MnistbenchError as e:
        row.status, row.reason = "failed", str(e)
    except Exception as e:  # noqa: BLE001 - a backend library's own error becomes the row's one-line reason
        row.status, row.reason = "failed", reason(e)
    # The torch backends run the safetensors file itself; the others their own format (``Prepared.files``).
    row.files = {"safetensors": t.record.extra["weights"]["bytes"]} if b.torch_native else {}
    if row.status == "ok":
        row.files.update(prepared.files)
    row.memory_baseline_bytes, row.peak_memory_bytes = tracker.baseline, tracker.peaks
    return row


def measure_isolated(name: str, t: Trained, ctx: BackendContext, data: TestSet, reference: np.ndarray,
                     options: InferOptions) -> BackendRun:
    """``measure`` in a fresh (spawned) process: no allocator pages, caches or compiled code left by earlier backends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_measure_in_child, name, t, ctx, data, reference, options).result()
    except BrokenProcessPool:
        why = "the measuring process died (out of memory, or a crash in the backend's library)"
    except Exception as e:  # noqa: BLE001 - e.g. a model class that cannot be sent to a child process
        why = f"cannot measure in a fresh process ({reason(e, 160)})"
    return BackendRun(t.record.cell, display_name(t.record.config["model"]), t.record.seed, name, "failed", why)


def _measure_in_child(name: str, t: Trained, ctx: BackendContext, data: TestSet, reference: np.ndarray,
                      options: InferOptions) -> BackendRun:
    if not backend(name).missing():
        backend(name).preload()
    with thread_budget(options.threads):
        return measure(name, t, ctx, data, reference, options)


def run_inference(folder: Path, options: InferOptions, data_dir=None,
                  progress: Callable[[str], None] = lambda line: None) -> InferenceResult:
    """Measure every finished cell of ``folder`` on every backend of ``options``."""
    from ..environment import environment

    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise MnistbenchError(f"--device {options.device}: no CUDA device here (torch {torch.__version__})")
    trained = load_trained(Path(folder), options)
    data, dataset, warnings = load_test_set(trained, options, data_dir)
    rows: list[BackendRun] = []
    for name in options.backends:
        if not backend(name).missing():
            backend(name).preload()
    method = PeakMemory(options.device).method
    with thread_budget(options.threads):
        for t in trained:
            with tempfile.TemporaryDirectory(prefix="mnistbench-infer-") as work:
                ctx = BackendContext(options.device, options.threads, Path(work), data.calibration, data.images[:EXAMPLE_IMAGES])
                reference = predict_all(eager(copy.deepcopy(t.model), ctx), data.images)
                for name in options.backends:
                    rows.append((measure_isolated if options.isolate else measure)(name, t, ctx, data, reference, options))
                    progress(_progress_line(rows[-1]))
        env = environment(options.threads)
    return InferenceResult(str(folder), options.model_dump(mode="json"), options.device, options.threads, method,
                           dataset, env, rows, warnings)


def _progress_line(row: BackendRun) -> str:
    if row.status != "ok":
        return f"{row.cell} {row.backend}: {row.status} ({row.reason})"
    p50 = f", p50 {1e6 * row.latency.p50:.1f} µs" if row.latency else ""
    return f"{row.cell} {row.backend}: accuracy {100 * row.gate.accuracy:.2f}%{p50}"
