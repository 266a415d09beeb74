"""`make install` without a GPU takes PyTorch's CPU wheels (TORCH=cpu|cuda|auto); checked with stand-ins for
python and pip, so nothing is downloaded or installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _env(path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS")) and k not in ("TORCH", "CONSTRAINTS")}
    if path is not None:
        env["PATH"] = path
    return env


def dry(tmp_path: Path, *args: str, path: str | None = None) -> str:
    out = subprocess.run(["make", "-n", f"VENV={tmp_path / 'v'}", *args, "install"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env=_env(path))
    assert out.returncode == 0, out.stderr
    return out.stdout


def pins() -> dict[str, str]:
    text = (ROOT / "constraints.txt").read_text()
    return dict(re.findall(r"^(torch|torchvision)==(\S+)$", text, re.M))


def test_torch_cpu_installs_the_cpu_wheels_of_the_pinned_versions_before_the_rest(tmp_path):
    p = pins()
    out = dry(tmp_path, "TORCH=cpu")
    [cpu] = [line for line in out.splitlines() if CPU_INDEX in line]
    assert f"torch=={p['torch']}+cpu torchvision=={p['torchvision']}+cpu" in cpu and "--no-deps" in cpu
    assert "--constraint constraints.txt" in cpu  # torch==X admits X+cpu, so the pins still hold
    assert out.index(CPU_INDEX) < out.index("-e '.[dev]'")
    assert CPU_INDEX not in dry(tmp_path, "TORCH=cuda")
    assert "--index-url https://download.pytorch.org/whl/cpu --no-deps torch torchvision" in dry(tmp_path, "TORCH=cpu", "CONSTRAINTS=")


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="this machine has an NVIDIA device")
def test_auto_takes_the_cpu_wheels_unless_nvidia_smi_answers(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("sh", "sed", "make"):  # a PATH without nvidia-smi
        os.symlink(shutil.which(tool), bare / tool)
    assert CPU_INDEX in dry(tmp_path, path=str(bare))
    (bare / "nvidia-smi").write_text("#!/bin/sh\n")
    (bare / "nvidia-smi").chmod(0o755)
    assert CPU_INDEX not in dry(tmp_path, path=str(bare))


def _fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    pip = venv / "bin" / "pip"  # records its arguments; the CPU index is unreachable, as offline
    pip.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "pip-calls"}\n'
                   'case "$*" in *--index-url*) echo "ERROR: No matching distribution found for torch" >&2; exit 1 ;; esac\n')
    pip.chmod(0o755)
    os.symlink(sys.executable, venv / "bin" / "python")
    return venv


def _install(tmp_path: Path, torch: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-s", f"VENV={_fake_venv(tmp_path)}", "PYTHON=true",
                           f"TORCH={torch}", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=_env())


def test_an_unreachable_cpu_index_falls_back_to_the_ordinary_index_with_one_warning(tmp_path):
    out = _install(tmp_path, "cpu")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("mnistbench:")]
    assert len(warnings) == 1 and "PyTorch's CPU wheels" in warnings[0] and "ordinary index" in warnings[0]
    calls = (tmp_path / "pip-calls").read_text().splitlines()
    assert CPU_INDEX in calls[1] and calls[2].endswith("-e .[dev]")
    assert (tmp_path / "v" / ".installed").exists()


def test_an_unknown_torch_build_is_refused_in_one_line(tmp_path):
    out = _install(tmp_path, "rocm")
    assert out.returncode != 0
    assert "mnistbench: error: TORCH must be auto, cpu or cuda, not 'rocm'" in out.stderr
    assert not (tmp_path / "v" / ".installed").exists()
