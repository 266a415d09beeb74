"""Shared fixtures: tiny synthetic IDX datasets written by the tests, and the real data when present."""

from __future__ import annotations

import gzip
import os
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REAL_DATA = os.environ.get("MNISTBENCH_DATA_DIR")
# Ray reads this when it is first imported, which may be while a test module is collected: set before any is, so a
# local Ray session of the tests listens on 127.0.0.1 only (test_scale_out.py, "loopback only").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write an unsigned-byte IDX file (magic 0x0000080N, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob, mtime=0))
    else:
        path.write_bytes(blob)
    return path


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights up a 6x6 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
        images[i, r : r + 6, c : c + 6] = 255
    return images, labels


def make_dataset(folder: Path, n_train: int = 256, n_test: int = 128, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = synthetic_digits(n_train, 0)
    te_x, te_y = synthetic_digits(n_test, 1)
    write_idx(folder / "train-images-idx3-ubyte", tr_x, gz)
    write_idx(folder / "train-labels-idx1-ubyte", tr_y, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", te_x, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", te_y, gz)
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A folder holding a 256/128-sample synthetic dataset in MNIST's four gzip IDX files."""
    return make_dataset(tmp_path / "data")


# Drawing a report's matplotlib figures (PNG and SVG) costs about 1.5 s a report, a third of `make test`'s time.
# Tests that look at figures, or at the files a report writes, carry the `figures` marker and draw them for real;
# for every other test, and the fixtures it sets up first, in this process only (a CLI run in a subprocess still
# draws), a report is its tables and page.
_DRAW = {"figures": False}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _DRAW["figures"] = item.get_closest_marker("figures") is not None  # before any fixture of the test is set up


@contextmanager
def figures_drawn():
    """Reports written inside draw their figures, whatever the current test's markers: for a shared (module-scoped)
    finished run that later tests compare with a run in a subprocess, which always draws, or that is set up by
    whichever test comes first (``-m slow`` deselects a different first test than ``make test``)."""
    before, _DRAW["figures"] = _DRAW["figures"], True
    try:
        yield
    finally:
        _DRAW["figures"] = before


@pytest.fixture(autouse=True, scope="session")
def _figures_only_where_checked():
    from mnistbench.report import plots

    real = plots.write_plots
    patch = pytest.MonkeyPatch()
    patch.setattr(plots, "write_plots", lambda folder, report: real(folder, report) if _DRAW["figures"] else [])
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Tests never read the user's cache; the real data is opted into via the realdata fixture.
    monkeypatch.delenv("MNISTBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def pytest_collection_modifyitems(items):
    # Tests that use the real files carry the `realdata` marker: `pytest -m "not realdata"` leaves them out.
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA or not Path(REAL_DATA).is_dir():
        pytest.skip("real MNIST not available (set MNISTBENCH_DATA_DIR)")
    return Path(REAL_DATA)


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY_SPEC = """\
name: tiny
dataset: mnist
device: cpu
epochs: 2
batch_size: 32
eval_batch_size: 64
optimizer: adam
lr: 3.0e-3
schedule: onecycle
threads: 1
matrix:
  model: [lenet5, mlp-matched]
  seed: [0, 1]
"""
