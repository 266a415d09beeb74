"""`make bench-cpu` / `make bench-gpu` / `make image-*` and scripts/bench.sh, with stand-ins for the engines and the venv.

Fake `docker` and `podman` first on PATH record every call; a fake venv's `mnistbench` records its arguments.
Nothing here builds an image, starts a container or trains a model (`make test-containers` does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
NVIDIA_INFO = "Server:\n Runtimes: io.containerd.runc.v2 nvidia runc\n Default Runtime: runc\n"
PLAIN_INFO = "Server:\n Runtimes: io.containerd.runc.v2 runc\n Default Runtime: runc\n"
ROOTLESS_DOCKER_INFO = PLAIN_INFO + " Security Options:\n  seccomp\n   Profile: builtin\n  rootless\n"
PODMAN_INFO = "host:\n  ociRuntime:\n    name: runc\n  security:\n    rootless: false\n"
ROOTLESS_PODMAN_INFO = PODMAN_INFO.replace("rootless: false", "rootless: true")
ID = "0123abcd" * 8
TAG = re.compile(r"mnistbench-(cpu|cuda):" + re.escape(VERSION) + r"-[0-9a-f]{12}")

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("make")), reason="needs bash and make")


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


class Host:
    """A tmp_path world: fake docker and podman on PATH, a fake venv, and a data folder."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.calls = tmp_path / "engine-calls"
        self.calls.mkdir(parents=True)
        self.images = tmp_path / "images"
        self.images.mkdir()
        self.bin = tmp_path / "bin"
        self.venv = tmp_path / "venv"
        self.data = tmp_path / "mnist"
        self.native_log = tmp_path / "native-args"
        # The native CLI: records its arguments, one a line.
        self.preload_log = tmp_path / "native-preload"
        _script(self.venv / "bin" / "mnistbench",
                f'printf "%s\\n" "$@" > {self.native_log}; printf "%s" "${{LD_PRELOAD:-}}" > {self.preload_log}\n')
        self.host_cuda(False)
        (self.venv / ".installed").touch()  # so `make install` finds the fake venv up to date
        self.engine("docker", answers=False)
        self.engine("podman", answers=False)

    def engine(self, name: str, answers: bool, info: str | None = None, version: str | None = None,
               image_id: str | None = None, build_fails: bool = False) -> None:
        """A fake engine: `info` answers or fails; `image inspect` finds what `build` made; every call is recorded
        as calls/N (its name, then its arguments, one a line)."""
        info = info if info is not None else (PLAIN_INFO if name == "docker" else PODMAN_INFO)
        version = version or ("Docker version 27.3.1, build ce12230" if name == "docker" else "podman version 4.3.1")
        image_id = image_id or (f"sha256:{ID}" if name == "docker" else ID)
        (self.tmp / f"{name}-info").write_text(info)
        answer = f"cat {self.tmp / f'{name}-info'}" if answers else "echo 'Cannot connect to the engine' >&2; exit 1"
        build = (
            'echo "STEP 12/21: RUN mnistbench-pip --torch torch torchvision"; echo "ERROR: No matching distribution found for torch==2.14.1"; '
            'echo "Error: building at STEP \\"RUN ...\\": exit status 1" >&2; exit 1'
            if build_fails else f'touch "{self.images}/$(tag "$@")"; echo "Successfully tagged"'
        )
        body = (
            f'n=$(ls {self.calls} | wc -l | tr -d " "); printf "%s\\n" {name} "$@" > {self.calls}/$n\n'
            'tag() { while [ $# -gt 0 ]; do if [ "$1" = -t ]; then echo "${2//[:\\/]/_}"; return; fi; shift; done; }\n'
            'case "$1" in\n'
            f"  info) {answer} ;;\n"
            f"  --version) echo '{version}' ;;\n"
            f"  build) {build} ;;\n"
            f'  image) t="${{@: -1}}"; [ -e "{self.images}/${{t//[:\\/]/_}}" ] || {{ echo "Error: no such image" >&2; exit 1; }}\n'
            f'     if [ "$3" = --format ]; then echo "{image_id}"; fi ;;\n'
            "esac\n"
        )
        _script(self.bin / name, body)

    def has_image(self, tag: str) -> None:
        (self.images / tag.replace(":", "_").replace("/", "_")).touch()

    def host_cuda(self, sees_gpu: bool) -> None:
        _script(self.venv / "bin" / "python", f"exit {0 if sees_gpu else 1}\n")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "MNISTBENCH_"))}
        for name in ("DOCKER", "ENGINE", "VENV", "SPEC", "ARGS", "INSTALL", "CONSTRAINTS", "BUILD_FLAGS", "RUN_FLAGS", "CDI_SPEC_DIRS"):
            env.pop(name, None)
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", VENV=str(self.venv), MNISTBENCH_DATA_DIR=str(self.data),
                   CDI_SPEC_DIRS=str(self.tmp / "cdi"))
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

    def engine_calls(self) -> list[list[str]]:
        return [(self.calls / str(n)).read_text().splitlines() for n in range(len(list(self.calls.iterdir())))]

    def engine_call(self, command: str) -> list[str]:
        """The one call of that sub-command, without the engine's name."""
        found = [c[1:] for c in self.engine_calls() if c[1] == command]
        assert len(found) == 1, f"expected one `{command}`, got {self.engine_calls()}"
        return found[0]

    def native_args(self) -> list[str] | None:
        return self.native_log.read_text().splitlines() if self.native_log.exists() else None


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[n + 1] for n, a in enumerate(argv[:-1]) if a == flag]


def tag_of(target: str, **env: str) -> str:
    out = subprocess.run(["scripts/image.sh", target, "--tag"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         env={**{k: v for k, v in os.environ.items() if k not in ("CONSTRAINTS", "BUILD_FLAGS")}, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# ------------------------------------------------------------------ no engine: the native fallback


def test_without_an_engine_make_bench_cpu_says_so_in_one_line_and_runs_natively(host):
    out = host.make("bench-cpu", "SPEC=bench/smoke.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "mnistbench: no container engine answers (docker info and podman info failed); running natively"
    ]
    assert host.native_args() == ["run", "bench/smoke.yaml"]
    assert [c[:2] for c in host.engine_calls()] == [["docker", "info"], ["podman", "info"]]


def test_make_bench_cpu_runs_bench_cpu_yaml_unless_told_another_spec_and_passes_args(host):
    assert host.make("bench-cpu").returncode == 0
    assert host.native_args() == ["run", "bench/cpu.yaml"]
    assert host.make("bench-cpu", "SPEC=bench/smoke.yaml", "ARGS=--force --no-download").returncode == 0
    assert host.native_args() == ["run", "bench/smoke.yaml", "--force", "--no-download"]


def test_docker_no_runs_natively_without_asking_an_engine(host):
    host.engine("docker", answers=True)
    out = host.bench("cpu", DOCKER="no")
    assert out.returncode == 0 and out.stderr == ""
    assert host.native_args() == ["run", "bench/smoke.yaml"]
    assert host.engine_calls() == []


def test_docker_yes_without_an_engine_fails_in_one_line(host):
    out = host.bench("cpu", DOCKER="yes")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "DOCKER=yes" in out.stderr
    assert host.native_args() is None


def test_an_unknown_docker_mode_is_refused(host):
    out = host.bench("cpu", DOCKER="maybe")
    assert out.returncode == 2 and "auto, yes or no" in out.stderr


def _linker_cache(host: Host, *libraries: str) -> list[Path]:
    """A stand-in `ldconfig -p` that lists these libraries (empty files in tmp_path: the loader skips them with a warning)."""
    paths = [host.tmp / "lib" / name for name in libraries]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    lines = "".join(f"\\t{p.name} (libc6,x86-64) => {p}\\n" for p in paths)
    _script(host.bin / "ldconfig", f'[ "$1" = -p ] && printf "{len(paths)} libs found in cache\\n{lines}"\n')
    return paths


@pytest.mark.parametrize("wanted, preloaded", [
    (None, None), ("libc", None), ("tcmalloc", "libtcmalloc_minimal.so.4"), ("auto", "libtcmalloc_minimal.so.4"),
    ("jemalloc", "libjemalloc.so.2"),
])
def test_a_native_run_preloads_the_allocator_it_is_asked_for(host, wanted, preloaded):
    libs = _linker_cache(host, "libjemalloc.so.2", "libtcmalloc_minimal.so.4")
    env = {"DOCKER": "no", "LD_PRELOAD": ""} | ({"MNISTBENCH_MALLOC": wanted} if wanted else {})
    out = host.bench("cpu", **env)
    assert out.returncode == 0, out.stderr
    assert host.native_args() == ["run", "bench/smoke.yaml"]
    expected = next((str(p) for p in libs if p.name == preloaded), "")
    assert host.preload_log.read_text() == expected


def test_without_tcmalloc_auto_keeps_the_c_librarys_malloc_and_a_named_allocator_is_an_error(host):
    _linker_cache(host)
    out = host.bench("cpu", DOCKER="no", LD_PRELOAD="", MNISTBENCH_MALLOC="auto")
    assert out.returncode == 0 and out.stderr == "" and host.preload_log.read_text() == ""
    for wanted in ("tcmalloc", "jemalloc"):
        out = host.bench("cpu", DOCKER="no", MNISTBENCH_MALLOC=wanted)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
        assert f"MNISTBENCH_MALLOC={wanted}" in out.stderr and "apt-get install" in out.stderr


def test_an_unknown_allocator_is_refused_in_one_line(host):
    out = host.bench("cpu", DOCKER="no", MNISTBENCH_MALLOC="ptmalloc")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "mnistbench: error: MNISTBENCH_MALLOC must be libc, tcmalloc, jemalloc or auto, not 'ptmalloc'"
    ]
    assert host.native_args() is None


def test_engine_names_the_one_engine_to_ask(host):
    host.engine("docker", answers=True)
    out = host.bench("cpu", ENGINE="podman")
    assert out.returncode == 0 and "(podman info failed)" in out.stderr
    assert [c[:2] for c in host.engine_calls()] == [["podman", "info"]]


# ------------------------------------------------------------------ an engine: build once, then run


def test_with_docker_bench_cpu_builds_the_missing_image_and_runs_the_spec_in_it(host):
    host.engine("docker", answers=True)
    out = host.bench("cpu", "bench/smoke.yaml", "--force")
    assert out.returncode == 0, out.stderr
    assert host.native_args() is None
    image = tag_of("cpu")
    assert TAG.fullmatch(image) and image.startswith("mnistbench-cpu:")

    build = host.engine_call("build")
    assert flag_values(build, "-f") == ["docker/cpu.Dockerfile"]
    assert flag_values(build, "-t") == [image]
    assert flag_values(build, "--build-arg") == ["CONSTRAINTS=constraints.txt"]
    assert build[-1] == "."
    assert f"mnistbench: building {image} with docker (log: build/image-cpu.log)" in out.stderr

    run = host.engine_call("run")
    assert "--gpus" not in run and "--device" not in run and "--init" in run
    assert flag_values(run, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert sorted(flag_values(run, "-v")) == sorted([
        f"{ROOT}/results:/mnistbench/results",
        f"{ROOT}/bench:/mnistbench/bench:ro",
        f"{ROOT}/reference:/mnistbench/reference:ro",
        f"{host.data}:/data/mnist",
    ])
    env = dict(e.split("=", 1) for e in flag_values(run, "-e"))
    assert env.keys() == {"MNISTBENCH_IMAGE", "MNISTBENCH_IMAGE_ID", "MNISTBENCH_GIT_COMMIT", "MNISTBENCH_DATA_DIR"}
    assert env["MNISTBENCH_IMAGE"] == image and env["MNISTBENCH_IMAGE_ID"] == f"sha256:{ID}"
    assert env["MNISTBENCH_DATA_DIR"] == "/data/mnist"
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?|unknown", env["MNISTBENCH_GIT_COMMIT"])
    assert run[-4:] == [image, "run", "bench/smoke.yaml", "--force"]
    assert host.data.is_dir(), "the data folder is created before the engine could create it as root"


def test_a_matching_image_is_reused_without_building(host):
    host.engine("docker", answers=True)
    host.has_image(tag_of("cpu"))
    out = host.bench("cpu")
    assert out.returncode == 0, out.stderr
    assert [c[1] for c in host.engine_calls()] == ["info", "--version", "image", "image", "run"]
    assert "building" not in out.stderr


def test_a_failing_build_is_one_line_with_the_engines_last_lines_and_nothing_runs(host):
    host.engine("docker", answers=True, build_fails=True)
    out = host.make("bench-cpu", "SPEC=bench/smoke.yaml")
    assert out.returncode != 0
    errors = [l for l in out.stderr.splitlines() if l.startswith("mnistbench: error:")]
    assert len(errors) == 1
    assert "building mnistbench-cpu:" in errors[0] and "failed (exit 1)" in errors[0]
    assert "No matching distribution found for torch==2.14.1" in errors[0] and "exit status 1" in errors[0]
    assert "full log: build/image-cpu.log" in errors[0]
    assert [c[1] for c in host.engine_calls()].count("run") == 0 and host.native_args() is None


def test_a_spec_outside_bench_is_mounted_into_the_container(host, tmp_path):
    host.engine("docker", answers=True)
    spec = tmp_path / "mine.yaml"
    spec.write_text((ROOT / "bench" / "smoke.yaml").read_text())
    assert host.bench("cpu", str(spec)).returncode == 0
    run = host.engine_call("run")
    assert f"{spec}:/mnistbench/specs/mine.yaml:ro" in flag_values(run, "-v")
    assert run[-1] == "specs/mine.yaml"


def test_a_missing_spec_fails_before_anything_runs(host):
    out = host.bench("cpu", "bench/nope.yaml")
    assert out.returncode == 2 and "bench/nope.yaml" in out.stderr
    assert host.engine_calls() == [] and host.native_args() is None


def test_build_and_run_flags_reach_the_engine(host):
    host.engine("docker", answers=True)
    out = host.bench("cpu", BUILD_FLAGS="--build-arg INDEX_URL=https://mirror.example/simple --secret id=ca_bundle,src=/x.pem",
                     RUN_FLAGS="--network host")
    assert out.returncode == 0, out.stderr
    build = host.engine_call("build")
    assert flag_values(build, "--build-arg") == ["CONSTRAINTS=constraints.txt", "INDEX_URL=https://mirror.example/simple"]
    assert flag_values(build, "--secret") == ["id=ca_bundle,src=/x.pem"]
    assert flag_values(host.engine_call("run"), "--network") == ["host"]


# ------------------------------------------------------------------ podman


def test_podman_is_used_when_docker_does_not_answer_and_its_image_id_gets_the_sha256_prefix(host):
    host.engine("podman", answers=True)
    out = host.bench("cpu")
    assert out.returncode == 0, out.stderr
    assert [c[:2] for c in host.engine_calls()][:2] == [["docker", "info"], ["podman", "info"]]
    run = host.engine_call("run")
    assert f"MNISTBENCH_IMAGE_ID=sha256:{ID}" in flag_values(run, "-e")
    assert flag_values(run, "--user") == [f"{os.getuid()}:{os.getgid()}"] and "--userns=keep-id" not in run


def test_rootless_engines_map_the_caller_so_results_stay_theirs(host):
    host.engine("podman", answers=True, info=ROOTLESS_PODMAN_INFO)
    assert host.bench("cpu").returncode == 0
    run = host.engine_call("run")
    assert "--userns=keep-id" in run and flag_values(run, "--user") == [f"{os.getuid()}:{os.getgid()}"]

    other = Host(host.tmp / "docker-world")
    other.engine("docker", answers=True, info=ROOTLESS_DOCKER_INFO)
    assert other.bench("cpu").returncode == 0
    assert flag_values(other.engine_call("run"), "--user") == ["0:0"]


# ------------------------------------------------------------------ the GPU target


def test_with_the_nvidia_runtime_bench_gpu_runs_the_cuda_image_with_docker_gpus_all(host):
    host.engine("docker", answers=True, info=NVIDIA_INFO)
    out = host.make("bench-gpu")
    assert out.returncode == 0, out.stderr
    image = tag_of("gpu")
    assert image.startswith("mnistbench-cuda:") and image != tag_of("cpu")
    build = host.engine_call("build")
    assert flag_values(build, "-f") == ["docker/cuda.Dockerfile"] and flag_values(build, "-t") == [image]
    run = host.engine_call("run")
    assert flag_values(run, "--gpus") == ["all"] and "--device" not in run
    assert f"MNISTBENCH_IMAGE={image}" in flag_values(run, "-e")
    assert run[-3:] == [image, "run", "bench/gpu.yaml"]
    assert host.native_args() is None


def test_podman_with_an_nvidia_cdi_spec_runs_the_cuda_image_with_the_cdi_device(host):
    host.engine("podman", answers=True)
    (host.tmp / "cdi").mkdir()
    (host.tmp / "cdi" / "nvidia.yaml").write_text('cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n')
    out = host.bench("gpu", "bench/gpu.yaml")
    assert out.returncode == 0, out.stderr
    run = host.engine_call("run")
    assert flag_values(run, "--device") == ["nvidia.com/gpu=all"] and "--gpus" not in run
    assert flag_values(run, "-e")[0].startswith("MNISTBENCH_IMAGE=mnistbench-cuda:")


def test_podmans_docker_shim_is_podman(host):
    # podman-docker's `docker` answers `docker info` with podman's, and takes podman's GPU flag.
    host.engine("docker", answers=True, info=PODMAN_INFO, version="podman version 4.3.1", image_id=ID)
    (host.tmp / "cdi").mkdir()
    (host.tmp / "cdi" / "nvidia.json").write_text('{"kind": "nvidia.com/gpu"}')
    assert host.bench("gpu", "bench/gpu.yaml").returncode == 0
    run = host.engine_call("run")
    assert run and flag_values(run, "--device") == ["nvidia.com/gpu=all"]
    assert f"MNISTBENCH_IMAGE_ID=sha256:{ID}" in flag_values(run, "-e")


def test_an_engine_without_gpu_access_leaves_bench_gpu_to_the_hosts_cuda(host):
    host.engine("docker", answers=True, info=PLAIN_INFO)
    host.host_cuda(True)
    out = host.bench("gpu", "bench/gpu.yaml")
    assert out.returncode == 0, out.stderr
    assert "running natively" in out.stderr
    assert host.native_args() == ["run", "bench/gpu.yaml"]
    assert [c[1] for c in host.engine_calls()] == ["info", "--version"]


def test_bench_gpu_with_no_engine_and_no_cuda_fails_with_one_line(host):
    host.engine("podman", answers=True)  # but no CDI spec
    out = host.bench("gpu", "bench/gpu.yaml")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and "NVIDIA" in lines[0]
    assert host.native_args() is None


# ------------------------------------------------------------------ make image-cpu / image-gpu and the tag


def test_make_image_cpu_builds_and_prints_the_tag(host):
    host.engine("docker", answers=True)
    out = host.make("-s", "image-cpu", BUILD_FLAGS="--build-arg TORCH_INDEX_URL=")
    assert out.returncode == 0, out.stderr
    tag = tag_of("cpu", BUILD_FLAGS="--build-arg TORCH_INDEX_URL=")
    assert out.stdout.strip() == tag
    build = host.engine_call("build")
    assert flag_values(build, "-t") == [tag] and "TORCH_INDEX_URL=" in flag_values(build, "--build-arg")
    assert f"mnistbench: built {tag} (sha256:{ID})" in out.stderr


def test_make_image_without_an_engine_fails_in_one_line(host):
    out = host.make("-s", "image-gpu")
    assert out.returncode != 0
    errors = [l for l in out.stderr.splitlines() if l.startswith("mnistbench: error:")]
    assert errors == ["mnistbench: error: make image-gpu needs a container engine, and none answers "
                      "(docker info and podman info failed)"]


def test_the_tag_changes_with_what_goes_into_the_image_and_nothing_else(tmp_path):
    copy = tmp_path / "repo"
    for part in ["scripts", "docker", "mnistbench"]:
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ["pyproject.toml", "constraints.txt", "README.md"]:
        shutil.copy(ROOT / part, copy / part)

    def tag(**env: str) -> str:
        out = subprocess.run(["scripts/image.sh", "cpu", "--tag"], cwd=copy, capture_output=True, text=True, timeout=30,
                             env={**{k: v for k, v in os.environ.items() if k not in ("CONSTRAINTS", "BUILD_FLAGS")}, **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    first = tag()
    assert first == tag_of("cpu"), "the same inputs, the same tag"
    (copy / "README.md").write_text("edited")
    (copy / "mnistbench" / "__pycache__").mkdir(exist_ok=True)
    (copy / "mnistbench" / "__pycache__" / "x.pyc").write_text("")
    assert tag() == first, "README and bytecode do not go into the image"
    assert tag(BUILD_FLAGS="--build-arg TORCH_INDEX_URL=") != first
    (copy / "mnistbench" / "cli.py").write_text((copy / "mnistbench" / "cli.py").read_text() + "\n")
    second = tag()
    assert second != first
    (copy / "constraints.txt").write_text((copy / "constraints.txt").read_text() + "\n")
    assert tag() not in (first, second)


def test_the_images_need_a_constraints_file(host):
    out = host.make("-s", "image-cpu", "CONSTRAINTS=nope.txt")
    assert out.returncode != 0
    assert "mnistbench: error: the images need a constraints file, and CONSTRAINTS='nope.txt' names none" in out.stderr


# ------------------------------------------------------------------ make install and CI


def test_make_install_pins_with_the_constraints_file_and_records_it(tmp_path):
    def dry(*args: str) -> str:
        out = subprocess.run(["make", "-n", f"VENV={tmp_path / 'v'}", *args, "install"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")})
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "pip install --quiet --constraint constraints.txt -e '.[dev]'" in dry()
    assert "mnistbench-constraints" in dry()
    assert "--constraint" not in dry("CONSTRAINTS=")


def test_ci_runs_the_container_test_after_the_tests():
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines.index("make test") < next(n for n, l in enumerate(lines) if "make test-containers" in l)
