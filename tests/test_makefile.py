"""`make bench-cpu` / `make bench-gpu` and scripts/bench.sh, with stand-ins for docker and the venv.

A fake `docker` first on PATH records every call; a fake venv's `mnistbench` records its arguments.
Nothing here builds an image, starts a container or trains a model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
NVIDIA_INFO = "Server:\n Runtimes: io.containerd.runc.v2 nvidia runc\n Default Runtime: runc\n"
PLAIN_INFO = "Server:\n Runtimes: io.containerd.runc.v2 runc\n Default Runtime: runc\n"

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("make")), reason="needs bash and make")


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


class Host:
    """A tmp_path world: a fake docker on PATH, a fake venv, and a data folder."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.calls = tmp_path / "docker-calls"
        self.calls.mkdir()
        self.bin = tmp_path / "bin"
        self.venv = tmp_path / "venv"
        self.data = tmp_path / "mnist"
        self.native_log = tmp_path / "native-args"
        # The native CLI: records its arguments, one a line.
        _script(self.venv / "bin" / "mnistbench", f'printf "%s\\n" "$@" > {self.native_log}\n')
        self.host_cuda(False)
        (self.venv / ".installed").touch()  # so `make install` finds the fake venv up to date
        self.docker(engine=False)

    def docker(self, engine: bool, info: str = PLAIN_INFO) -> None:
        """A docker CLI whose `info` answers or fails; every call leaves its arguments in calls/N."""
        (self.tmp / "docker-info").write_text(info)
        answer = f"cat {self.tmp / 'docker-info'}" if engine else "echo 'Cannot connect to the Docker daemon' >&2; exit 1"
        body = (
            f'n=$(ls {self.calls} | wc -l | tr -d " "); printf "%s\\n" "$@" > {self.calls}/$n\n'
            'case "$1" in\n'
            f"  info) {answer} ;;\n"
            '  image) echo "sha256:0123abcd" ;;\n'
            "esac\n"
        )
        _script(self.bin / "docker", body)

    def host_cuda(self, sees_gpu: bool) -> None:
        _script(self.venv / "bin" / "python", f"exit {0 if sees_gpu else 1}\n")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "MNISTBENCH_"))}
        for name in ("DOCKER", "VENV", "SPEC", "ARGS", "INSTALL"):
            env.pop(name, None)
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", VENV=str(self.venv), MNISTBENCH_DATA_DIR=str(self.data))
        env.update(extra)
        return env

    def bench(self, target: str, spec: str = "bench/smoke.yaml", *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["scripts/bench.sh", target, spec, *args], cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=60
        )

    def make(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", f"VENV={self.venv}", *args],
            cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=60,
        )

    def docker_calls(self) -> list[list[str]]:
        return [(self.calls / str(n)).read_text().splitlines() for n in range(len(list(self.calls.iterdir())))]

    def docker_call(self, command: str) -> list[str]:
        found = [c for c in self.docker_calls() if c[0] == command]
        assert len(found) == 1, f"expected one `docker {command}`, got {self.docker_calls()}"
        return found[0]

    def native_args(self) -> list[str] | None:
        return self.native_log.read_text().splitlines() if self.native_log.exists() else None


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[n + 1] for n, a in enumerate(argv[:-1]) if a == flag]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# ------------------------------------------------------------------ no engine: the native fallback


def test_without_an_engine_make_bench_cpu_says_so_in_one_line_and_runs_natively(host):
    out = host.make("bench-cpu", "SPEC=bench/smoke.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "mnistbench: no Docker engine answers (docker info failed); running natively"
    ]
    assert host.native_args() == ["run", "bench/smoke.yaml"]
    assert [c[0] for c in host.docker_calls()] == ["info"]


def test_make_bench_cpu_runs_bench_cpu_yaml_unless_told_another_spec_and_passes_args(host):
    assert host.make("bench-cpu").returncode == 0
    assert host.native_args() == ["run", "bench/cpu.yaml"]
    assert host.make("bench-cpu", "SPEC=bench/smoke.yaml", "ARGS=--force --no-download").returncode == 0
    assert host.native_args() == ["run", "bench/smoke.yaml", "--force", "--no-download"]


def test_docker_no_runs_natively_without_asking_the_engine(host):
    host.docker(engine=True)
    out = host.bench("cpu", DOCKER="no")
    assert out.returncode == 0 and out.stderr == ""
    assert host.native_args() == ["run", "bench/smoke.yaml"]
    assert host.docker_calls() == []


def test_docker_yes_without_an_engine_fails_in_one_line(host):
    out = host.bench("cpu", DOCKER="yes")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "DOCKER=yes" in out.stderr
    assert host.native_args() is None


def test_an_unknown_docker_mode_is_refused(host):
    out = host.bench("cpu", DOCKER="maybe")
    assert out.returncode == 2 and "auto, yes or no" in out.stderr


# ------------------------------------------------------------------ an engine: the CPU image


def test_with_an_engine_bench_cpu_builds_the_versioned_cpu_image_and_runs_the_spec_in_it(host):
    host.docker(engine=True)
    out = host.bench("cpu", "bench/smoke.yaml", "--force")
    assert out.returncode == 0, out.stderr
    assert host.native_args() is None
    image = f"mnistbench-cpu:{VERSION}"

    build = host.docker_call("build")
    assert flag_values(build, "-f") == ["docker/cpu.Dockerfile"]
    assert flag_values(build, "-t") == [image]
    assert build[-1] == "."
    assert flag_values(build, "--build-arg")[0].startswith("GIT_COMMIT=")
    assert host.docker_call("image") == ["image", "inspect", "--format", "{{.Id}}", image]

    run = host.docker_call("run")
    assert "--gpus" not in run
    assert flag_values(run, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert sorted(flag_values(run, "-v")) == sorted([
        f"{ROOT}/results:/mnistbench/results",
        f"{ROOT}/bench:/mnistbench/bench:ro",
        f"{host.data}:/data/mnist",
    ])
    assert set(flag_values(run, "-e")) == {
        f"MNISTBENCH_IMAGE={image}",
        "MNISTBENCH_IMAGE_ID=sha256:0123abcd",
        "MNISTBENCH_DATA_DIR=/data/mnist",
    }
    assert run[-4:] == [image, "run", "bench/smoke.yaml", "--force"]
    assert host.data.is_dir(), "the data folder is created before docker could create it as root"


def test_a_spec_outside_bench_is_mounted_into_the_container(host, tmp_path):
    host.docker(engine=True)
    spec = tmp_path / "mine.yaml"
    spec.write_text((ROOT / "bench" / "smoke.yaml").read_text())
    assert host.bench("cpu", str(spec)).returncode == 0
    run = host.docker_call("run")
    assert f"{spec}:/mnistbench/specs/mine.yaml:ro" in flag_values(run, "-v")
    assert run[-1] == "specs/mine.yaml"


def test_a_missing_spec_fails_before_anything_runs(host):
    out = host.bench("cpu", "bench/nope.yaml")
    assert out.returncode == 2 and "bench/nope.yaml" in out.stderr
    assert host.docker_calls() == [] and host.native_args() is None


# ------------------------------------------------------------------ the GPU target


def test_with_the_nvidia_runtime_bench_gpu_runs_the_cuda_image_with_all_gpus(host):
    host.docker(engine=True, info=NVIDIA_INFO)
    out = host.make("bench-gpu")
    assert out.returncode == 0, out.stderr
    image = f"mnistbench-cuda:{VERSION}"
    build = host.docker_call("build")
    assert flag_values(build, "-f") == ["docker/cuda.Dockerfile"] and flag_values(build, "-t") == [image]
    run = host.docker_call("run")
    assert flag_values(run, "--gpus") == ["all"]
    assert f"MNISTBENCH_IMAGE={image}" in flag_values(run, "-e")
    assert run[-3:] == [image, "run", "bench/gpu.yaml"]
    assert host.native_args() is None


def test_an_engine_without_the_nvidia_runtime_leaves_bench_gpu_to_the_hosts_cuda(host):
    host.docker(engine=True, info=PLAIN_INFO)
    host.host_cuda(True)
    out = host.bench("gpu", "bench/gpu.yaml")
    assert out.returncode == 0, out.stderr
    assert "running natively" in out.stderr
    assert host.native_args() == ["run", "bench/gpu.yaml"]
    assert [c[0] for c in host.docker_calls()] == ["info"]


def test_bench_gpu_with_no_engine_and_no_cuda_fails_with_one_line(host):
    out = host.bench("gpu", "bench/gpu.yaml")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and "NVIDIA" in lines[0]
    assert host.native_args() is None
