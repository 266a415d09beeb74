"""The environment record: the keys runs have always stored, the added ones, and their parsers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistbench import __version__, environment as env_module
from mnistbench.environment import (cpu_flags, cpu_libraries, determinism, environment, format_environment, git_commit,
                                    package_versions)

ORIGINAL_KEYS = {"mnistbench", "git_commit", "python", "torch", "torch_cuda", "cudnn", "os", "machine", "cpu", "cpu_count",
                 "gpu", "container", "threads"}

CONFIG_SHOW = """PyTorch built with:
  - GCC 13.3
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture applications
  - Intel(R) MKL-DNN v3.5.3 (Git Hash 66f0cb9eb66affd2da3bf5f8d897376f04aae6af)
  - CPU capability usage: AVX2
"""


def test_the_record_keeps_its_keys_and_adds_the_reproducibility_facts():
    env = environment(threads=3)
    assert ORIGINAL_KEYS <= set(env)
    assert env["mnistbench"] == __version__ and env["threads"] == 3
    assert isinstance(env["host"], str) and env["host"]
    assert env["python_implementation"] in ("CPython", "PyPy")
    assert set(env["os_details"]) == {"system", "release", "version", "distribution", "libc"}
    assert list(env["packages"]) == list(env_module.PACKAGES)
    assert isinstance(env["packages"]["torch"], str) and isinstance(env["packages"]["pyyaml"], str)
    assert isinstance(env["cpu_capability"], str)
    assert env["cpu_flags"] is None or set(env["cpu_flags"]) <= set(env_module.KERNEL_FLAGS)
    assert isinstance(env["interop_threads"], int) and env["interop_threads"] >= 1
    assert isinstance(env["determinism"]["deterministic_algorithms"], bool)
    json.dumps(env)  # what a run file stores must be plain JSON


def test_determinism_follows_the_current_torch_settings():
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert environment()["determinism"]["deterministic_algorithms"] is True
    finally:
        torch.use_deterministic_algorithms(before)
    assert environment()["determinism"]["deterministic_algorithms"] is before


def test_on_cuda_determinism_reports_the_cudnn_and_tf32_switches(monkeypatch):
    # No GPU needed: the switches are plain Python flags that exist in every torch build.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    before = torch.backends.cuda.matmul.allow_tf32  # a property of torch's C++ state: monkeypatch cannot undo it
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        found = determinism()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert (found["cudnn_benchmark"], found["cudnn_deterministic"], found["cudnn_allow_tf32"], found["cuda_matmul_allow_tf32"]) == (
        True, False, False, True)


def test_cpu_flags_keep_only_kernel_selecting_flags_in_a_fixed_order():
    x86 = "processor\t: 0\nmodel name\t: Test\nflags\t\t: fpu avx512f sse2 avx2 fma avx amx_tile avx512_bf16\n"
    assert cpu_flags(x86) == ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm sve i8mm bf16\n"
    assert cpu_flags(arm) == ["asimd", "sve", "bf16", "i8mm"]
    assert cpu_flags("processor\t: 0\n") is None


def test_onednn_and_mkl_versions_are_read_from_the_build_config_or_left_out():
    assert cpu_libraries(CONFIG_SHOW) == {"onednn": "3.5.3", "mkl": "2024.2 (build 20240605)"}
    assert cpu_libraries("PyTorch built with:\n  - GCC 13.3\n") == {"onednn": None, "mkl": None}


def test_a_missing_package_has_no_version():
    import numpy

    assert package_versions(("numpy", "no-such-distribution-xyz")) == {"numpy": numpy.__version__, "no-such-distribution-xyz": None}


def test_text_form_shows_nested_groups_and_lists():
    text = format_environment({"torch": "2.4.0", "gpu": None, "cpu_flags": ["avx", "avx2"], "packages": {"numpy": "2.0.1"}})
    assert text.splitlines() == ["torch      2.4.0", "gpu        -", "cpu_flags  avx avx2", "packages", "  numpy  2.0.1"]


@pytest.mark.parametrize("changed, dirty", [("docker/cpu.Dockerfile", True), ("mnistbench/x.py", True), ("notes.txt", False)])
def test_git_commit_is_dirty_when_the_package_or_the_container_files_change(tmp_path, monkeypatch, changed, dirty):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("docker/cpu.Dockerfile", "mnistbench/x.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(env_module, "REPO_ROOT", tmp_path)
    clean = git_commit()
    assert clean is not None and len(clean) == 12
    (tmp_path / changed).write_text("2\n")
    assert git_commit() == clean + ("+dirty" if dirty else "")


def test_git_commit_outside_a_checkout_comes_from_the_container_build(tmp_path, monkeypatch):
    monkeypatch.setattr(env_module, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("MNISTBENCH_GIT_COMMIT", "abcdef123456")
    assert git_commit() == "abcdef123456"


MAPS = """55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 131  /usr/bin/python3.11
7f3a10000000-7f3a10021000 rw-p 00000000 00:00 0
7f3a1c200000-7f3a1c228000 r--p 00000000 fd:01 262  /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a1c400000-7f3a1c401000 r-xp 00000000 fd:01 990  /opt/venv/lib/python3.11/site-packages/torch/lib/libc10.so
7ffd4c3e0000-7ffd4c401000 rw-p 00000000 00:00 0  [stack]
"""


@pytest.mark.parametrize("extra, expected", [
    ("", "libc"),
    ("7f3a1c600000-7f3a1c62a000 r-xp 00000000 fd:01 77  /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n",
     "tcmalloc"),
    ("7f3a1c600000-7f3a1c62a000 r-xp 00000000 fd:01 78  /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n", "jemalloc"),
])
def test_malloc_names_the_allocator_whose_library_the_process_maps(extra, expected):
    assert env_module.malloc(MAPS + extra) == expected


TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no /proc: the allocator is not recorded")
@pytest.mark.parametrize("preload", [None, TCMALLOC])
def test_the_record_names_the_allocator_a_process_really_runs_on(preload):
    if preload is not None and not preload.exists():
        pytest.skip("libtcmalloc-minimal4 is not installed")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    code = "from mnistbench.environment import malloc; print(malloc())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == ("tcmalloc" if preload else "libc")
