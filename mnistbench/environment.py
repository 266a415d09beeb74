"""Where a figure was measured: software versions, hardware, container, git commit.

Besides what identifies the machine, the record holds what decides whether two runs repeat
bit for bit: the CPU kernels torch dispatches to (capability, oneDNN/MKL versions, CPU flags),
thread counts, and the cuDNN/TF32/deterministic-algorithm settings.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
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
    # Only the checkout mnistbench lives in: an installed copy must not report an enclosing project's commit.
    commit = _git("rev-parse", "--short=12", "HEAD") if (REPO_ROOT / ".git").exists() else None
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


# Dependencies whose version can change a figure; distribution names as pip knows them.
PACKAGES = ("torch", "torchvision", "numpy", "typer", "rich", "pyyaml", "pydantic", "tabulate", "matplotlib", "scipy", "filelock")

# CPU features that select different matmul/convolution kernels (x86 /proc/cpuinfo "flags", Arm "Features").
KERNEL_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "sve", "sve2", "bf16", "i8mm",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    """The KERNEL_FLAGS this CPU has, in KERNEL_FLAGS order; None where /proc/cpuinfo cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [f for f in KERNEL_FLAGS if f in present]
    return None


def os_details() -> dict:
    """Kernel version string, distribution name and C library, beyond the short ``os`` entry."""
    try:
        distribution = platform.freedesktop_os_release().get("PRETTY_NAME")
    except (OSError, AttributeError):  # not Linux, or no os-release file
        distribution = None
    libc, libc_version = platform.libc_ver()
    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "distribution": distribution,
        "libc": f"{libc} {libc_version}" if libc else None,
    }


def cpu_libraries(config: str) -> dict[str, str | None]:
    """oneDNN and MKL versions from ``torch.__config__.show()``'s text; None for one it does not name."""
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\s+v?(\d[\w.]*)", config)
    mkl = re.search(r"Math Kernel Library Version\s+(\d[\w.]*)(?:-Product Build (\d+))?", config)
    return {
        "onednn": onednn.group(1) if onednn else None,
        "mkl": (mkl.group(1) + (f" (build {mkl.group(2)})" if mkl.group(2) else "")) if mkl else None,
    }


# Allocators a process may run on instead of the C library's malloc, loaded with LD_PRELOAD (scripts/bench.sh does it
# on MNISTBENCH_MALLOC: docs/performance.md, "The memory allocator"). They change speed and memory, never a result.
ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def malloc(maps: str | None = None) -> str | None:
    """The memory allocator this process runs on: the first of ALLOCATORS whose library is mapped into it, else
    "libc" (the C library's own malloc); None where /proc/self/maps cannot be read (not Linux)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return None
    libraries = {Path(fields[5]).name for fields in map(str.split, maps.splitlines()) if len(fields) > 5}  # the paths
    for name in ALLOCATORS:
        if any(lib.startswith(f"lib{name}") for lib in libraries):
            return name
    return "libc"


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
        "host": socket.gethostname(),
        "os_details": os_details(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "cpu_capability": _cpu_capability(torch),
        "cpu_flags": cpu_flags(),
        **cpu_libraries(torch.__config__.show()),
        "constraints": constraints(),
        "malloc": malloc(),
    }


def _cpu_capability(torch) -> str | None:
    """The SIMD level torch's CPU kernels dispatch to ("AVX2", "AVX512", ...)."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get else None


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def determinism() -> dict:
    """Settings that decide whether a rerun repeats bit for bit; the cuDNN/TF32 ones are None without CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic if cuda else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark if cuda else None,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
    }


def environment(threads: int | None = None) -> dict:
    """The environment record stored with every run.

    The keys of earlier versions keep their names and meanings; later keys are only added.
    Settings a run may change (threads, determinism) are read now, the rest once per process.
    """
    import torch

    return {
        **_static(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "determinism": determinism(),
    }


def format_environment(env: dict) -> str:
    """``env`` as aligned ``key  value`` lines; nested groups indented under their name, None as "-"."""
    lines: list[str] = []

    def add(d: dict, indent: int) -> None:
        width = max((len(k) for k in d), default=0) + 2
        for key, value in d.items():
            if isinstance(value, dict):
                lines.append(" " * indent + key)
                add(value, indent + 2)
            else:
                shown = " ".join(map(str, value)) if isinstance(value, list) else "-" if value is None else str(value)
                lines.append(" " * indent + key.ljust(width) + shown)

    add(env, 0)
    return "\n".join(lines)
