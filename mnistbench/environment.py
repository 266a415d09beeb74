"""Where a figure was measured: software versions, hardware, container, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from . import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent
# What decides the environment a run gets; scripts/bench.sh marks the images' commit from the same list.
DIRTY_PATHS = ("mnistbench", "pyproject.toml", "constraints.txt", "docker")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it (None outside a checkout)."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return os.environ.get("MNISTBENCH_GIT_COMMIT")  # passed by scripts/bench.sh to a container, which has no .git
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *DIRTY_PATHS)
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def container() -> dict | None:
    """The image a run was in, as the Makefile's ``docker run`` passes it; None when run natively."""
    image = os.environ.get("MNISTBENCH_IMAGE")
    if not image:
        return None
    return {"image": image, "image_id": os.environ.get("MNISTBENCH_IMAGE_ID")}


def constraints() -> str | None:
    """The version pins this environment was installed with, as `make install` and the images record
    them in the venv ("constraints.txt sha256:..."); None when installed some other way."""
    try:
        return (Path(sys.prefix) / "mnistbench-constraints").read_text().strip() or None
    except OSError:
        return None


@lru_cache(maxsize=None)
def _static() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    gpu = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
            "driver": _nvidia_driver(),
        }
    return {
        "mnistbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "container": container(),
        "constraints": constraints(),
    }


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(threads: int | None = None) -> dict:
    """The environment record stored with every run."""
    import torch

    return {**_static(), "threads": threads if threads is not None else torch.get_num_threads()}
