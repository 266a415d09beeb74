"""The container images, read as text: one source of versions, every download location a build argument,
secrets never in a layer, cached dependency layers, a non-root user, lint-clean. No engine needed;
`make test-containers` builds and runs them for real."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "cpu.Dockerfile", "cuda": ROOT / "docker" / "cuda.Dockerfile"}
PIP_SH = ROOT / "docker" / "pip.sh"
CONSTRAINTS = ROOT / "constraints.txt"
SECRETS = ("--mount=type=secret,id=ca_bundle", "--mount=type=secret,id=pip_conf")


def instructions(flavour: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) pairs, comments left out."""
    parser = DockerfileParser(path=str(DOCKERFILES[flavour]))
    return [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]


def split(flavour: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The global ARGs above the FROM, and the stage from its FROM on."""
    ins = instructions(flavour)
    first = next(n for n, (i, _) in enumerate(ins) if i == "FROM")
    return ins[:first], ins[first:]


def global_args(flavour: str) -> dict[str, str]:
    return dict(value.split("=", 1) for _, value in split(flavour)[0])


def index_of(stage: list[tuple[str, str]], instruction: str, pattern: str) -> int:
    hits = [n for n, (ins, value) in enumerate(stage) if ins == instruction and re.search(pattern, value)]
    assert hits, f"no {instruction} matching {pattern!r}"
    return hits[0]


def pins() -> dict[str, str]:
    lines = [l.split("#")[0].strip() for l in CONSTRAINTS.read_text().splitlines()]
    return dict(l.split("==") for l in lines if l)


def name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


# ------------------------------------------------------------------ one source of versions


def test_constraints_pin_every_dependency_exactly_torch_included():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {name(d) for d in project["dependencies"] + extras["dev"]} - {"mnistbench"}
    for ref in (d for d in extras["dev"] if name(d) == "mnistbench"):  # mnistbench[a,b]: the extras a and b
        for extra in re.search(r"\[(.*)\]", ref).group(1).split(","):
            wanted |= {name(d) for d in extras[extra.strip()]}
    assert wanted <= set(pins()), f"not pinned: {wanted - set(pins())}"
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in pins()), "names are normalized (lower case, '-')"
    assert all(re.fullmatch(r"\d+(\.\d+)*((a|b|rc|\.post)\d+)?", v) for v in pins().values()), "every pin is an exact version"
    assert {"torch", "torchvision"} <= set(pins())


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_images_take_their_versions_from_the_constraints_file_only(flavour):
    _, stage = split(flavour)
    assert ("ARG", "CONSTRAINTS=constraints.txt") in stage
    assert index_of(stage, "COPY", r"^\$\{CONSTRAINTS\}\s+/opt/venv/mnistbench-constraints\.txt$") >= 0
    text = "\n".join(value for _, value in stage)
    assert not re.search(r"[A-Za-z]==\d", text), "no version pinned in the Dockerfile itself"
    assert "mnistbench-constraints.txt" in PIP_SH.read_text() and '--constraint "$pins"' in PIP_SH.read_text()


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_records_which_pins_it_has_as_make_install_does(flavour):
    _, stage = split(flavour)
    run = stage[index_of(stage, "RUN", r"> /opt/venv/mnistbench-constraints$")][1]
    assert 'printf \'%s sha256:%s\\n\' "$CONSTRAINTS"' in run
    makefile = (ROOT / "Makefile").read_text()
    assert '"sha256:" + hashlib.sha256' in makefile and "$(VENV)/mnistbench-constraints" in makefile


def test_the_run_record_reads_the_pins_the_environment_was_installed_with(tmp_path, monkeypatch):
    from mnistbench import environment

    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert environment.constraints() is None
    (tmp_path / "mnistbench-constraints").write_text("constraints.txt sha256:" + "0" * 64 + "\n")
    assert environment.constraints() == "constraints.txt sha256:" + "0" * 64


# ------------------------------------------------------------------ the same steps for both images


def test_both_images_have_the_same_steps_but_the_nvidia_variables():
    cpu, cuda = split("cpu")[1], split("cuda")[1]
    nvidia = [ins for ins in cuda if ins[0] == "ENV" and "NVIDIA_" in ins[1]]
    assert len(nvidia) == 1
    assert [ins for ins in cuda if ins not in nvidia] == cpu
    assert "NVIDIA_VISIBLE_DEVICES=all" in nvidia[0][1] and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in nvidia[0][1]


def test_they_differ_in_the_torch_index_only():
    cpu, cuda = global_args("cpu"), global_args("cuda")
    assert set(cpu) == set(cuda) == {"BASE_IMAGE", "TORCH_INDEX_URL"}
    assert cpu["BASE_IMAGE"] == cuda["BASE_IMAGE"]
    assert cpu["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert cuda["TORCH_INDEX_URL"] == "", "the CUDA image takes torch from the ordinary index, CUDA libraries included"


# ------------------------------------------------------------------ nothing that reaches out is hard-coded


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_base_image_is_a_build_argument_pinned_to_an_exact_version(flavour):
    base = global_args(flavour)["BASE_IMAGE"]
    image, _, tag = base.rpartition(":")
    assert image.startswith("docker.io/library/"), "fully qualified, so podman needs no short-name lookup"
    assert re.match(r"\d+\.\d+\.\d+-", tag), f"{base} is not pinned to an x.y.z version"
    froms = [value for ins, value in instructions(flavour) if ins == "FROM"]
    assert froms == ["${BASE_IMAGE}"], "one stage, on the BASE_IMAGE argument"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_no_syntax_directive_so_buildkit_pulls_no_frontend_image(flavour):
    assert "syntax=" not in DOCKERFILES[flavour].read_text().lower()


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_every_address_is_the_default_of_a_build_argument(flavour):
    for ins, value in instructions(flavour):
        if ins != "ARG":
            assert "://" not in value, f"{ins} {value}"
    code = [l for l in PIP_SH.read_text().splitlines() if not l.lstrip().startswith("#")]
    assert not any("://" in l for l in code)
    _, stage = split(flavour)
    args = {value.split("=")[0] for ins, value in stage if ins == "ARG"}
    assert {"INDEX_URL", "EXTRA_INDEX_URLS", "TORCH_INDEX_URL", "CONSTRAINTS"} <= args
    assert ("ARG", "INDEX_URL=") in stage, "empty: pip's default index, PyPI"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_every_step_that_downloads_gets_the_secrets_and_no_other_step_does(flavour):
    _, stage = split(flavour)
    runs = [value for ins, value in stage if ins == "RUN"]
    downloads = [r for r in runs if "mnistbench-pip" in r]
    assert len(downloads) == 3  # torch, the project's dependencies, and Ray when EXTRAS=ray
    for run in downloads:
        assert all(s in run for s in SECRETS), run
    for run in runs:
        if run not in downloads:
            assert "--mount" not in run and ("pip install" not in run or "--no-deps --no-build-isolation" in run), run
    text = DOCKERFILES[flavour].read_text()
    assert not re.search(r"^(ENV|ARG|COPY).*(cert|ca_bundle|pip\.conf)", text, re.M | re.I), "no CA bundle or pip.conf in a layer"


# ------------------------------------------------------------------ layers, user, entry point


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dependencies_are_installed_before_the_source_is_copied(flavour):
    # An edit to mnistbench/ must leave the torch and dependency layers cached.
    _, stage = split(flavour)
    torch = index_of(stage, "RUN", r"mnistbench-pip --torch torch torchvision$")
    deps = index_of(stage, "RUN", r"mnistbench-pip --project-deps /src/pyproject\.toml$")
    source = index_of(stage, "COPY", r"^mnistbench/?\s")
    assert index_of(stage, "COPY", r"^\$\{CONSTRAINTS\}") < torch < index_of(stage, "COPY", r"^pyproject\.toml\s") < deps < source
    assert source < index_of(stage, "RUN", r"pip install .*--no-deps")
    assert not any(ins == "COPY" and "README" in value for ins, value in stage), "README edits do not change the image"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_runs_as_a_numeric_non_root_user(flavour):
    users = [value.strip() for ins, value in split(flavour)[1] if ins == "USER"]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]) and int(users[-1].split(":")[0]) != 0


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_runs_the_cli_unbuffered_and_bakes_in_no_commit(flavour):
    parser = DockerfileParser(path=str(DOCKERFILES[flavour]))
    _, stage = split(flavour)
    assert [value for ins, value in stage if ins == "ENTRYPOINT"] == ['["mnistbench"]']
    assert parser.envs.get("PYTHONUNBUFFERED") == "1"
    # An image is reused across commits with the same inputs: bench.sh passes the commit at run time.
    assert "GIT_COMMIT" not in DOCKERFILES[flavour].read_text()
    assert '"MNISTBENCH_GIT_COMMIT=$(git_commit)"' in (ROOT / "scripts" / "bench.sh").read_text()


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_image_workdir_is_where_bench_sh_mounts_results(flavour):
    workdirs = [value.strip() for ins, value in split(flavour)[1] if ins == "WORKDIR"]
    script = (ROOT / "scripts" / "bench.sh").read_text()
    assert re.search(r"^workdir=(\S+)", script, re.M).group(1) == workdirs[-1]


def test_the_container_gets_the_commit_the_native_record_has_from_the_one_helper():
    from mnistbench.environment import DIRTY_PATHS, git_commit

    script = (ROOT / "scripts" / "bench.sh").read_text()
    function = re.search(r"^git_commit\(\) \{.*?^\}", script, re.M | re.S).group(0)
    assert "from mnistbench.environment import git_commit" in function  # no second definition in bash
    shell = subprocess.run(["bash", "-c", f"root={ROOT}; {function}; git_commit"], capture_output=True, text=True)
    assert shell.stdout.strip() == (git_commit() or "unknown")
    assert {"docker", "constraints.txt", "mnistbench", "pyproject.toml"} <= set(DIRTY_PATHS)


# ------------------------------------------------------------------ docker/pip.sh, with a fake pip


def _pip_sh(tmp_path: Path, *args: str, **env: str) -> list[list[str]]:
    """Run docker/pip.sh with a `pip` that records its arguments; one list per call."""
    log = tmp_path / "pip-calls"
    fake = tmp_path / "bin" / "pip"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "PIP_CERT=$PIP_CERT" "PIP_CONFIG_FILE=$PIP_CONFIG_FILE" "--" >> {log}\n')
    fake.chmod(0o755)
    if not (fake.parent / "python").exists():  # --project-deps reads pyproject.toml with python
        (fake.parent / "python").symlink_to(sys.executable)
    full = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "MNISTBENCH_SECRETS_DIR": str(tmp_path / "secrets"),
            "MNISTBENCH_PINS": "/pins.txt", **env}
    subprocess.run(["sh", str(PIP_SH), *args], env=full, check=True, timeout=30)
    calls, current = [], []
    for line in log.read_text().splitlines():
        if line == "--":
            calls.append(current)
            current = []
        else:
            current.append(line)
    return calls


def test_pip_sh_takes_torch_from_the_torch_index_and_its_dependencies_from_the_ordinary_one(tmp_path):
    calls = _pip_sh(tmp_path, "--torch", "torch", "torchvision", TORCH_INDEX_URL="https://torch.example/cpu",
                    INDEX_URL="https://mirror.example/simple", EXTRA_INDEX_URLS="https://a.example,https://b.example")
    assert len(calls) == 2
    first, second = calls
    assert first[:7] == ["install", "--no-cache-dir", "--constraint", "/pins.txt", "--index-url", "https://torch.example/cpu", "--no-deps"]
    assert first[7:9] == ["torch", "torchvision"]
    assert "https://torch.example/cpu" not in second and "--no-deps" not in second
    assert second[second.index("--index-url") + 1] == "https://mirror.example/simple"
    assert [second[n + 1] for n, a in enumerate(second) if a == "--extra-index-url"] == ["https://b.example", "https://a.example"]
    assert ["--constraint", "/pins.txt"] == second[second.index("--constraint"):second.index("--constraint") + 2]
    assert "PIP_CERT=" in second and "PIP_CONFIG_FILE=" in second, "no secrets given, none used"


def test_pip_sh_without_a_torch_index_uses_the_ordinary_one_only_and_the_secrets_when_given(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ca_bundle").write_text("pem")
    (tmp_path / "secrets" / "pip_conf").write_text("[global]\n")
    calls = _pip_sh(tmp_path, "--torch", "torch", "torchvision", TORCH_INDEX_URL="")
    assert len(calls) == 1
    assert calls[0][:4] == ["install", "--no-cache-dir", "--constraint", "/pins.txt"] and "--index-url" not in calls[0]
    assert f"PIP_CERT={tmp_path}/secrets/ca_bundle" in calls[0]
    assert f"PIP_CONFIG_FILE={tmp_path}/secrets/pip_conf" in calls[0]


def test_pip_sh_installs_the_projects_dependencies_one_argument_each(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [call] = _pip_sh(tmp_path, "--project-deps", str(ROOT / "pyproject.toml"))
    assert call[4:4 + len(deps)] == deps


# ------------------------------------------------------------------ build context and lint


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
    for path in [".git/HEAD", ".venv/bin/python", "results/cpu/runs/a.json", "reference/cpu/runs/a.json", "data/mnist/x.gz", ".benchmarks/x.json",
                 "mnistbench/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v", "build/image-cpu.log"]:
        assert _ignored(path, patterns), f"{path} would be sent to the engine"
    for path in ["pyproject.toml", "constraints.txt", "docker/pip.sh", "docker/requirements-ray.txt", "mnistbench/cli.py"]:
        assert not _ignored(path, patterns), f"the images COPY {path}, but .dockerignore leaves it out"


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_hadolint_finds_no_warnings_in_either_dockerfile():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings it)")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "warning", *map(str, DOCKERFILES.values())], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_shell_scripts_pass_shellcheck():
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    scripts = [PIP_SH, *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    out = subprocess.run([shellcheck, "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
