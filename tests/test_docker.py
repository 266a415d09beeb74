"""The container images, read as text: pinned bases, cached dependency layers, a non-root user, lint-clean."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "cpu.Dockerfile", "cuda": ROOT / "docker" / "cuda.Dockerfile"}
TORCH_INDEX = {"cpu": r"https://download\.pytorch\.org/whl/cpu", "cuda": r"https://download\.pytorch\.org/whl/cu\d{3}"}


def instructions(flavour: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) pairs, comments left out."""
    parser = DockerfileParser(path=str(DOCKERFILES[flavour]))
    return [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]


def stages(flavour: str) -> list[list[tuple[str, str]]]:
    """The instructions split at each FROM, each stage starting with its FROM."""
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(flavour):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def index_of(stage: list[tuple[str, str]], instruction: str, pattern: str) -> int:
    hits = [n for n, (ins, value) in enumerate(stage) if ins == instruction and re.search(pattern, value)]
    assert hits, f"no {instruction} matching {pattern!r}"
    return hits[0]


def torch_install(flavour: str) -> str:
    runs = [value for ins, value in instructions(flavour) if ins == "RUN" and re.search(r"\btorch==", value)]
    assert len(runs) == 1, "torch is installed by exactly one RUN"
    return runs[0]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_every_base_image_is_pinned_to_an_exact_version_tag(flavour):
    froms = [value.split()[0] for ins, value in instructions(flavour) if ins == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder stage and a runtime stage"
    for image in froms:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image} has no explicit tag"
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned to an x.y.z version"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_final_stage_runs_as_a_numeric_non_root_user(flavour):
    users = [value.strip() for ins, value in stages(flavour)[-1] if ins == "USER"]
    assert users, "the runtime stage sets USER"
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]) and int(users[-1].split(":")[0]) != 0


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_torch_is_pinned_and_comes_from_the_flavours_pytorch_index(flavour):
    run = torch_install(flavour)
    assert re.search(r"\btorch==\d+\.\d+\.\d+(\s|$)", run)
    assert re.search(r"\btorchvision==\d+\.\d+\.\d+(\s|$)", run)
    assert re.search(r"--index-url\s+" + TORCH_INDEX[flavour] + r"(\s|$)", run), run
    assert "--no-cache-dir" in run


def test_both_images_pin_the_same_torch():
    pins = {f: sorted(re.findall(r"\btorch(?:vision)?==\S+", torch_install(f))) for f in DOCKERFILES}
    assert pins["cpu"] == pins["cuda"]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dependencies_are_installed_before_the_source_is_copied(flavour):
    # An edit to mnistbench/ must leave the torch and requirements layers cached.
    builder = stages(flavour)[-2]
    source = index_of(builder, "COPY", r"^mnistbench/?\s")
    assert index_of(builder, "RUN", r"\btorch==") < source
    assert index_of(builder, "COPY", r"docker/requirements\.txt") < index_of(builder, "RUN", r"--requirement|-r\s") < source
    assert source < index_of(builder, "RUN", r"pip install .*--no-deps \.")


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_runs_the_cli_unbuffered_and_knows_its_commit(flavour):
    parser = DockerfileParser(path=str(DOCKERFILES[flavour]))
    final = stages(flavour)[-1]
    assert [value for ins, value in final if ins == "ENTRYPOINT"] == ['["mnistbench"]']
    assert parser.envs.get("PYTHONUNBUFFERED") == "1"
    assert "GIT_COMMIT" in parser.args
    assert ("ENV", "MNISTBENCH_GIT_COMMIT=$GIT_COMMIT") in final


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_workdir_is_where_bench_sh_mounts_results(flavour):
    workdirs = [value.strip() for ins, value in stages(flavour)[-1] if ins == "WORKDIR"]
    script = (ROOT / "scripts" / "bench.sh").read_text()
    assert re.search(r"^workdir=(\S+)", script, re.M).group(1) == workdirs[-1]


def test_requirements_name_every_pyproject_dependency_but_torch():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps} - {"torch", "torchvision"}
    lines = [l.split("#")[0].strip() for l in (ROOT / "docker" / "requirements.txt").read_text().splitlines()]
    pins = dict(l.split("==") for l in lines if l)
    assert set(pins) == wanted
    assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in pins.values()), "every requirement is pinned with =="


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_state_out_and_lets_the_copied_files_in():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [l.strip() for l in lines if l.strip() and not l.startswith("#")]
    for path in [".git/HEAD", ".venv/bin/python", "results/cpu/runs/a.json", "data/mnist/x.gz", ".benchmarks/x.json",
                 "mnistbench/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v"]:
        assert _ignored(path, patterns), f"{path} would be sent to the Docker engine"
    for path in ["pyproject.toml", "README.md", "docker/requirements.txt", "docker/requirements-ray.txt", "mnistbench/cli.py"]:
        assert not _ignored(path, patterns), f"the images COPY {path}, but .dockerignore leaves it out"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_no_warnings_in_either_dockerfile():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings it)")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "warning", *map(str, DOCKERFILES.values())], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
