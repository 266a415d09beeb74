"""The engine's C kernels (kernels.c), compiled on first use with the machine's C compiler and loaded with ctypes.

What is left of LeNet-5's max-pools in PyTorch (fastpool.py) is a dozen element-wise calls, each a pass over the
layer's activations. kernels.c does the pool and its index in one pass, and its backward in another, following
``max_pool2d``'s own rule, so the results keep their bits; the engine takes it only where a probe on this machine
gave PyTorch's bits (``fastpool.native_verified``), as for its other speed-ups.

The library is built once per source, flags and compiler into the user's cache ($XDG_CACHE_HOME/mnistbench/kernels,
else a temporary folder) by ``$CC`` (default ``cc``), as torch.compile's C++ backend builds its kernels. It needs an
x86-64 CPU with AVX2. Where that or a compiler is missing, or the build fails, the engine keeps its PyTorch paths and
``status()`` says why (recorded with every CPU run). `MNISTBENCH_ENGINE_OFF=native-pool` turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from .speedups import speedup

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O2", "-mavx2", "-ffp-contract=off", "-shared", "-fPIC")

_P, _I = ctypes.c_void_p, ctypes.c_int64


@dataclass(frozen=True)
class Native:
    """The loaded library (None where it could not be had) and a one-line reason why not."""

    lib: Optional[ctypes.CDLL]
    reason: str  # "" when the library loaded

    def pool_forward(self, x: torch.Tensor, relu: bool) -> tuple:
        """The 2x2 max-pool of a contiguous float32 (N, C, H, W) ``x`` (H, W even): its values (with the ReLU after
        it, ``relu``) and each window's choice 0..3 (uint8)."""
        n, c, h, w = x.shape
        out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype)
        choice = torch.empty((n, c, h // 2, w // 2), dtype=torch.uint8)
        self.lib.pool2x2_fwd(x.data_ptr(), out.data_ptr(), choice.data_ptr(), n * c, h, w, int(relu))
        return out, choice

    def pool_backward(self, grad: torch.Tensor, out: torch.Tensor, choice: torch.Tensor, relu: bool) -> torch.Tensor:
        """The gradient of the pool's input (contiguous, the input's shape) from the contiguous ``grad`` of its output."""
        n, c, h, w = out.shape
        grad_x = torch.empty((n, c, 2 * h, 2 * w), dtype=grad.dtype)
        self.lib.pool2x2_bwd(grad.data_ptr(), out.data_ptr(), choice.data_ptr(), grad_x.data_ptr(), n * c, 2 * h, 2 * w,
                             int(relu))
        return grad_x


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnistbench" / "kernels"


def _writable(folder: Path) -> Path:
    """``folder`` made, or a folder of the system's temporary space where it cannot be (a read-only home)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"mnistbench-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def build(compiler: str, folder: Path) -> Path:
    """The library built from SOURCE into ``folder`` (once per source, flags and compiler); raises OSError or
    subprocess.CalledProcessError when it cannot be."""
    cmd = shlex.split(compiler)
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, version)).encode()).hexdigest()[:16]
    target = folder / f"kernels-{key}.so"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)  # built aside, then renamed: shards may race
        os.close(fd)
        try:
            subprocess.run([*cmd, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120,
                           check=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    lib.pool2x2_fwd.argtypes = [_P, _P, _P, _I, _I, _I, ctypes.c_int]
    lib.pool2x2_bwd.argtypes = [_P, _P, _P, _P, _I, _I, _I, ctypes.c_int]
    for fn in (lib.pool2x2_fwd, lib.pool2x2_bwd):
        fn.restype = None


@lru_cache(maxsize=None)
def load() -> Native:
    """The kernels, built and loaded once per process; ``reason`` says why not where they cannot be."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return Native(None, f"not an x86-64 CPU ({platform.machine()})")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return Native(None, f"the CPU lacks AVX2 (PyTorch's capability: {capability})")
    compiler = os.environ.get("CC") or "cc"
    if not shlex.split(compiler) or shutil.which(shlex.split(compiler)[0]) is None:
        return Native(None, f"no C compiler ({compiler}) on the PATH")
    try:
        lib = ctypes.CDLL(str(build(compiler, _writable(_cache_dir()))))
        _declare(lib)
    except subprocess.CalledProcessError as e:
        first = (e.stderr or e.stdout or "").strip().splitlines()[:1]
        return Native(None, f"{compiler} failed to build kernels.c{': ' + first[0] if first else ''}")
    except (OSError, subprocess.SubprocessError, AttributeError) as e:
        return Native(None, f"kernels.c could not be built or loaded: {e}")
    return Native(lib, "")


def status() -> str:
    """One line for the run record: whether the C kernels were loaded in this process, and why not (never builds)."""
    if not speedup("native-pool"):
        return "off (MNISTBENCH_ENGINE_OFF)"
    if load.cache_info().currsize == 0:
        return "not loaded (no CPU max-pool was trained)"
    native = load()
    if native.lib is None:
        return f"not used: {native.reason}"
    return "loaded (native-pool, taken for each shape whose probe gave PyTorch's bits)"
