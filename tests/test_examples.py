"""examples/: the Slurm scripts run against stand-ins for Slurm, Ray and mnistbench; the Kubernetes
manifests parsed, validated against the Kubernetes schemas (kubernetes-validate, offline), and
their commands given to the real CLI (as --dry-run) with the specs they name."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mnistbench import __version__
from mnistbench.cli import app
from mnistbench.spec.selection import Selection
from mnistbench.spec.schema import load_spec

ROOT = Path(__file__).resolve().parent.parent
SLURM, K8S = ROOT / "examples" / "slurm", ROOT / "examples" / "kubernetes"
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are checked against (Indexed Jobs are GA since 1.24)


def _script(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def dry_run(args: list[str]):
    """The CLI's answer to a run command from an example, as --dry-run (spec paths as in the repository)."""
    result = CliRunner().invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return result.output


def sbatch_directives(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", path.read_text(), re.M))


# --------------------------------------------------------------------------- Slurm


@pytest.mark.parametrize("name", ["shards.sbatch", "ray-cluster.sbatch"])
def test_slurm_scripts_are_valid_bash_and_shellcheck_clean(name):
    assert subprocess.run(["bash", "-n", str(SLURM / name)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(SLURM / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("first", [1, 0])
def test_the_array_script_gives_each_array_task_its_shard_and_together_every_cell_once(tmp_path, first):
    args_log = tmp_path / "args"
    _script(tmp_path / "mnistbench", f'printf "%s\\n" "$@" >> {args_log}; echo --- >> {args_log}\n')
    count = int(sbatch_directives(SLURM / "shards.sbatch")["array"].split("-")[1])
    for task in range(first, first + count):
        env = {"PATH": "/usr/bin:/bin", "MNISTBENCH": str(tmp_path / "mnistbench"), "SLURM_ARRAY_TASK_ID": str(task),
               "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_COUNT": str(count)}
        subprocess.run(["bash", str(SLURM / "shards.sbatch")], env=env, check=True, cwd=tmp_path)
    calls = [c.strip().splitlines() for c in args_log.read_text().split("---") if c.strip()]
    shards = [c[c.index("--shard") + 1] for c in calls]
    assert shards == [f"{i}/{count}" for i in range(1, count + 1)]
    cells = load_spec(ROOT / calls[0][1]).cells()
    picked = [k for c in calls for k in Selection.parse(c[c.index("--shard") + 1], []).pick(cells)]
    assert sorted(picked) == list(range(len(cells)))  # every cell of the spec, each once
    first_shard = Selection.parse(calls[0][calls[0].index("--shard") + 1], []).pick(cells)
    assert f"{len(cells)} cells ({len(first_shard)} selected)" in dry_run(calls[0])


def test_the_ray_cluster_script_starts_head_and_workers_and_drives_the_run(tmp_path):
    log = tmp_path / "log"
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    fake = tmp_path / "fake"
    fake.mkdir()
    # The driver: once the 3 nodes have started (the script's waits are 0 here).
    _script(bin_ / "mnistbench", f'for _ in $(seq 600); do [ "$(grep -c "^ray start" {log})" -ge 3 ] && break; sleep 0.05; done\n'
                                 f'echo "mnistbench $*" >> {log}\n')
    # `ray start --block` runs until its job step ends, then stops what it started.
    _script(bin_ / "ray", f'echo "ray $*" >> {log}\n[[ $1 == start ]] || exit 0\n'
                          f'trap \'echo "ray stopped $*" >> {log}; exit 0\' TERM\nwhile :; do sleep 0.05; done\n')
    _script(fake / "scontrol", "printf 'node1\\nnode2\\nnode3\\n'\n")
    _script(fake / "hostname", "echo 10.1.2.3\n")
    # srun: drop its options, then run the command here.
    _script(fake / "srun", 'while [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done; exec "$@"\n')
    env = {"PATH": f"{fake}:/usr/bin:/bin", "VENV": str(tmp_path / "venv"), "RAY_START_WAIT": "0",
           "SLURM_JOB_NODELIST": "node[1-3]", "SLURM_CPUS_PER_TASK": "16", "SLURM_GPUS_PER_TASK": "4"}
    subprocess.run(["bash", str(SLURM / "ray-cluster.sbatch")], env=env, check=True, cwd=tmp_path, timeout=60)
    deadline = time.monotonic() + 20  # the script starts Ray's nodes in the background, as srun steps
    while log.read_text().count("ray start") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    starts = [l for l in lines if l.startswith("ray start")]
    heads = [l for l in starts if "--head" in l]
    assert len(starts) == 3 and len(heads) == 1 and "--node-ip-address=10.1.2.3 --port=6379" in heads[0]
    assert all("--address=10.1.2.3:6379" in l and "--num-gpus=4" in l for l in starts if l not in heads)
    run = next(l for l in lines if l.startswith("mnistbench run"))
    args = shlex.split(run)[1:]
    assert args[args.index("--executor") + 1] == "ray" and args[args.index("--address") + 1] == "10.1.2.3:6379"
    dry_run(args)
    # Once the driver ends, the job stops the Ray processes it started, and no others: no `ray stop` on a shared node.
    assert not any(l.split()[:2] == ["ray", "stop"] for l in lines)
    stopped = [l for l in lines if l.startswith("ray stopped")]
    assert len(stopped) == 3 and lines.index(run) < min(lines.index(l) for l in stopped)


# --------------------------------------------------------------------------- Kubernetes


def manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def validate(resource: dict) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' brings kubernetes-validate")
    kv.validate(resource, K8S_VERSION, strict=True)


def image_user_and_workdir(flavour: str) -> tuple[str, str]:
    text = (ROOT / "docker" / f"{flavour}.Dockerfile").read_text()
    return re.findall(r"^USER (\d+)", text, re.M)[-1], re.findall(r"^WORKDIR (\S+)", text, re.M)[-1]


def test_the_indexed_job_is_a_valid_job_whose_pods_run_every_shard_once():
    job = manifest("indexed-job.yaml")
    validate(job)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    container = pod["containers"][0]
    assert container["image"] == f"mnistbench-cpu:{__version__}"
    user, workdir = image_user_and_workdir("cpu")
    assert str(pod["securityContext"]["runAsUser"]) == user
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["specs"] == f"{workdir}/bench"
    assert {"name": "MNISTBENCH_DATA_DIR", "value": mounts["data"]} in container["env"]
    calls = []
    for index in range(spec["completions"]):  # the pod's shell command, as each pod runs it
        command = container["args"][0].replace("exec mnistbench", "printf '%s\\n'")
        out = subprocess.run([*container["command"], command], env={"JOB_COMPLETION_INDEX": str(index)},
                             capture_output=True, text=True, check=True).stdout
        calls.append(out.splitlines())
    cells = load_spec(ROOT / calls[0][1]).cells()
    picked = [k for c in calls for k in Selection.parse(c[c.index("--shard") + 1], []).pick(cells)]
    assert sorted(picked) == list(range(len(cells)))
    dry_run(calls[0])


def test_the_rayjob_runs_the_driver_on_the_head_with_the_projects_ray_image():
    job = manifest("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    cluster = job["spec"]["rayClusterSpec"]
    pin = re.search(r"^ray\[default\]==(\S+)", (ROOT / "docker" / "requirements-ray.txt").read_text(), re.M).group(1)
    assert cluster["rayVersion"] == pin
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["mnistbench", "run"]
    assert args[args.index("--executor") + 1] == "ray" and args[args.index("--address") + 1] == "auto"
    user, workdir = image_user_and_workdir("cuda")
    spec_in_image = args[2]
    assert spec_in_image.startswith(f"{workdir}/bench/")
    dry_run(["run", str(ROOT / spec_in_image.removeprefix(f"{workdir}/")), *args[3:]])
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay takes strings only
        pod = group["template"]["spec"]
        validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": pod})
        assert str(pod["securityContext"]["runAsUser"]) == user
        container = pod["containers"][0]
        assert container["image"] == f"mnistbench-cuda:{__version__}-ray"
        for probe in ("readinessProbe", "livenessProbe"):
            assert "httpGet" in container[probe]  # the images have no wget for KubeRay's default probes
    for worker in cluster["workerGroupSpecs"]:
        assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {m["mountPath"] for m in head["volumeMounts"]} >= {f"{workdir}/bench", "/results"}
    assert args[args.index("--results-dir") + 1] == "/results"
