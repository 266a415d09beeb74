"""scripts/gpu-session.sh, the one command a short GPU loan runs: on a machine without CUDA it measures nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-session.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA would run the session")
def test_without_cuda_it_says_so_in_one_line_and_writes_no_results(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RES": str(tmp_path / "res"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout.strip().splitlines() == ["gpu-session: PyTorch sees no CUDA device here; nothing measured"]
    assert not (tmp_path / "res").exists()


def test_every_step_runs_a_real_command_with_its_own_limit():
    steps = [line.split()[1:3] for line in SCRIPT.read_text().splitlines() if line.startswith("step ")]
    names = [name for name, _ in steps]
    assert names == ["env", "cuda-tests", "speedrun", "profile-step", "bench-gpu", "infer"]
    assert sum(int(limit) for _, limit in steps) <= 600  # the whole session fits one 10-minute device call
    for spec in ("bench/speedrun-gpu.yaml", "bench/gpu.yaml", "bench/infer-gpu.yaml"):
        assert spec in SCRIPT.read_text() and (ROOT / spec).is_file()
