"""The dataset registry: each MNIST-family dataset's name, files and normalization, as plain data.

Imports no torch or numpy, so a spec names and checks its datasets without them (``datasets`` reads the files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    files: dict[str, str]  # role -> base file name (without .gz)
    mean: float
    std: float
    env_var: str
    torchvision_class: str  # torchvision.datasets class holding mirrors and official MD5s
    extra_dirs: tuple[str, ...] = ()

    def cache_dir(self) -> Path:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return base / "mnistbench" / self.name


def _idx_files() -> dict[str, str]:
    """The four file names every MNIST-family dataset uses."""
    return {
        "train-images": "train-images-idx3-ubyte",
        "train-labels": "train-labels-idx1-ubyte",
        "test-images": "t10k-images-idx3-ubyte",
        "test-labels": "t10k-labels-idx1-ubyte",
    }


@DATASETS.register("mnist", "MNIST handwritten digits (LeCun, Cortes, Burges), 60k train / 10k test")
def mnist() -> DatasetInfo:
    return DatasetInfo("mnist", "MNIST", _idx_files(), 0.1307, 0.3081, "MNISTBENCH_DATA_DIR", "MNIST")


@DATASETS.register("fashion-mnist", "Fashion-MNIST (Zalando), same IDX format, 60k train / 10k test")
def fashion_mnist() -> DatasetInfo:
    return DatasetInfo(
        "fashion-mnist",
        "Fashion-MNIST",
        _idx_files(),
        0.2860,
        0.3530,
        "MNISTBENCH_FASHION_DATA_DIR",
        "FashionMNIST",
        extra_dirs=("/usr/share/datasets/fashion-mnist",),
    )


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name).factory()
