"""Evaluate one results folder's saved weights, run by run: clean, shifted, rotated, corrupted and attacked accuracy.

Each run's figures go to ``<folder>/robustness/runs/<stem>.json``. A file already there is kept: it is reused when it
was made from the same weights with the same settings, and replaced only with ``force``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import MnistbenchError
from ..files import write_atomic
from ..results import RunRecord
from ..weights import finished_runs
from .attacks import AttackSettings, foolbox_version, robust_accuracy
from .corruptions import CORRUPTIONS, corrupt
from .layout import result_file
from .shifts import DIRECTIONS, rotate_degrees, shift_pixels

SCHEMA = 1


@dataclass(frozen=True)
class Settings:
    shifts: tuple[int, ...] = tuple(range(7))  # pixels, each of the 8 directions
    angles: tuple[int, ...] = tuple(range(-45, 46, 5))  # degrees, anticlockwise positive
    corruption_seed: int = 0
    attacks: Optional[AttackSettings] = field(default_factory=AttackSettings)  # None: no attacks
    batch: int = 1000

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class TestImages:
    """The test split as raw pixels (float32 N x 28 x 28 in [0, 255]) with the dataset's normalization constants."""

    images: np.ndarray
    labels: "object"  # torch int64 tensor
    mean: float
    std: float
    corrupted: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def corruption(self, name: str, seed: int) -> np.ndarray:
        # Made once per folder and kept as uint8, as MNIST-C stores its images.
        if (name, seed) not in self.corrupted:
            self.corrupted[(name, seed)] = np.rint(corrupt(self.images, name, seed)).astype(np.uint8)
        return self.corrupted[(name, seed)]


def test_images(dataset_name: str, data_dir, allow_download: bool) -> TestImages:
    from ..data.datasets import load_dataset

    dataset = load_dataset(dataset_name, data_dir, allow_download)
    return TestImages(dataset.test.images.numpy().astype(np.float32), dataset.test.labels,
                      dataset.info.mean, dataset.info.std)


def pixel_model(record: RunRecord, run_file: Path, test: TestImages):
    """The run's model with its saved weights, taking [0, 1] pixels (the dataset's normalization done inside)."""
    from ..weights import trained_model

    return torch.nn.Sequential(Normalize(test.mean, test.std), trained_model(run_file, record)).eval()


class Normalize(torch.nn.Module):
    """The training normalization as the model's first layer, so attacks and transforms work on [0, 1] pixels."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def accuracy(model01, pixels: np.ndarray, labels, batch: int) -> float:
    """Top-1 accuracy of ``model01`` on raw pixels (N x 28 x 28, [0, 255])."""
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(pixels), batch):
            x = torch.from_numpy(np.ascontiguousarray(pixels[lo : lo + batch])).float().div(255).unsqueeze(1)
            correct += int((model01(x).argmax(1) == labels[lo : lo + batch]).sum())
    return correct / len(pixels)


def measure(model01, test: TestImages, settings: Settings) -> dict:
    """Every figure of one model: clean, per shift and direction, per angle, per corruption, under attack."""
    acc = lambda pixels, labels=test.labels: accuracy(model01, pixels, labels, settings.batch)  # noqa: E731
    out: dict = {"test_images": len(test.images), "clean": acc(test.images)}
    out["shifts"] = {str(k): {d: acc(shift_pixels(test.images, k * dx, k * dy)) for d, (dx, dy) in DIRECTIONS.items()}
                     for k in settings.shifts}
    out["rotations"] = {str(a): acc(rotate_degrees(test.images, a)) for a in settings.angles}
    out["corruptions"] = {name: acc(test.corruption(name, settings.corruption_seed)) for name in CORRUPTIONS}
    attack = settings.attacks
    if attack is None:
        out["adversarial"] = {"status": "not requested"}
    elif foolbox_version() is None:
        out["adversarial"] = {"status": "not installed (pip install 'mnistbench[robust]')"}
    else:
        n = min(attack.subset, len(test.labels))
        x01 = torch.from_numpy(test.images[:n]).div(255).unsqueeze(1)
        found = robust_accuracy(model01, x01, test.labels[:n], attack)
        out["adversarial"] = {"status": "ok", "foolbox": foolbox_version(), "subset": n,
                              "clean_subset": acc(test.images[:n], test.labels[:n]), **found}
    return out


def _reusable(path: Path, sha: str, settings: dict, force: bool) -> Optional[dict]:
    if not path.is_file() or force:
        return None
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MnistbenchError(f"{path}: not a readable robustness file ({e}); pass --force to replace it") from None
    if kept.get("weights_sha256") == sha and kept.get("settings") == settings:
        return kept
    raise MnistbenchError(f"{path}: made from other weights or settings; pass --force to replace it")


def evaluate_folder(folder: Path, settings: Settings, data_dir=None, allow_download: bool = False, force: bool = False,
                    on_run: Optional[Callable[[str, bool, float], None]] = None) -> list[dict]:
    """The robustness figures of every finished run in ``folder`` (computed, or reused when already there)."""
    records = finished_runs(folder, "evaluate")
    tests: dict[str, TestImages] = {}
    results = []
    for run_file, record in records:
        sha = str((record.extra.get("weights") or {}).get("sha256", ""))
        path = result_file(folder, run_file)
        kept = _reusable(path, sha, settings.to_dict(), force)
        if kept is None:
            start = time.perf_counter()
            name = str(record.config.get("dataset", "mnist"))
            test = tests.get(name) or tests.setdefault(name, test_images(name, data_dir, allow_download))
            model01 = pixel_model(record, run_file, test)
            torch.manual_seed(settings.corruption_seed)
            kept = {"schema": SCHEMA, "run": run_file.name, "model": record.config["model"], "seed": record.seed,
                    "distort": bool(record.config.get("distort")), "weights_sha256": sha,
                    "recorded_test_accuracy": record.final.test_accuracy,  # the run's own test pass, for comparison
                    "settings": settings.to_dict(), **measure(model01, test, settings)}
            write_atomic(path, (json.dumps(kept, indent=1) + "\n").encode())
            if on_run:
                on_run(run_file.name, False, time.perf_counter() - start)
        elif on_run:
            on_run(run_file.name, True, 0.0)
        results.append(kept)
    return results
