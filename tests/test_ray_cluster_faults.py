"""A 2-node Ray cluster on 127.0.0.1 (`ray start` twice), faults injected by killing its processes mid-run:
a lost worker node does not crash the driver, a lost head ends it in one line with the resume command.

Slow (two Ray nodes and a driver in subprocesses): `make test-slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import make_dataset, write_spec

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
SPEC = """\
name: cluster
device: cpu
epochs: 4
batch_size: 32
eval_batch_size: 128
threads: 1
matrix:
  model: [lenet5, mlp-matched]
  seed: [0, 1]
"""
CELLS = ["lenet5_seed-0", "lenet5_seed-1", "mlp-matched_seed-0", "mlp-matched_seed-1"]
# For the lost head: one short cell whose end sets off the fault, and two long ones still running when it strikes, long
# enough (about 10 s each) that the driver finds the head gone (a few seconds) before they could finish. With four
# equal short cells, the other cells sometimes finished first and the run ended 0 (make test-slow, once).
SPEC_HEAD = """\
name: cluster
device: cpu
batch_size: 32
eval_batch_size: 128
threads: 1
variants:
  - {model: mlp-matched, epochs: 1, seed: 0}
  - {model: lenet5, epochs: 40, seed: 0}
  - {model: lenet5, epochs: 40, seed: 1}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head (1 CPU) and a second node (2 CPUs, resource ``second``), each with its own temp folder."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="mbray-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
        # Quick death detection; a multi-node cluster on one host (the variable's 0 would refuse it).
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                    "RAY_agent_register_timeout_ms": "120000",
                    # A home of its own: a token another Ray session left in ~/.ray/auth_token would turn on token
                    # authentication for some processes of this cluster and not others (InvalidAuthToken).
                    "HOME": str(self.temp)}

    def start(self) -> None:
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        self._ray("start", "--head", "--port", str(self.port), "--num-cpus", "1", "--include-dashboard=false",
                  "--temp-dir", str(self.temp), *common)
        self._ray("start", "--address", self.address, "--num-cpus", "2", "--resources", '{"second": 1}', *common)

    def _ray(self, *args: str) -> None:
        proc = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if proc.returncode:
            pytest.skip(f"a local Ray node did not start here: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")

    def processes(self) -> list:
        """Every process of this cluster (its command line names the head's temp folder or its port)."""
        marks = (str(self.temp), self.address, f"--gcs-address={self.address}")
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if any(m in cmd for m in marks) and "pytest" not in cmd and "mnistbench" not in cmd:
                found.append(p)
        return found

    def raylets(self) -> dict[str, object]:
        """The raylet of each node: the second node's is the one given the resource ``second``."""
        raylets = [p for p in self.processes() if p.name() == "raylet"]
        second = [p for p in raylets if "second" in " ".join(p.cmdline())]
        return {"second": second[0] if second else None, "head": next((p for p in raylets if p not in second), None)}

    def kill_second_node(self) -> None:
        os.kill(self.raylets()["second"].pid, signal.SIGKILL)

    def kill_head(self) -> None:
        """The head's raylet and the cluster's GCS, as when the head machine goes down."""
        for p in [self.raylets()["head"]] + [p for p in self.processes() if p.name() == "gcs_server"]:
            p.kill()

    def stop(self) -> None:
        for p in self.processes():
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def drive(cluster: Cluster, tmp_path: Path, when, fault, spec_text: str = SPEC, n_train: int = 1024) -> tuple[int, str, str]:
    """Run ``spec_text`` on the cluster; call ``fault()`` once an output line satisfies ``when``."""
    data = make_dataset(tmp_path / "data", n_train=n_train, n_test=256)
    spec = write_spec(tmp_path / "cluster.yaml", spec_text)
    proc = subprocess.Popen([sys.executable, "-m", "mnistbench.cli", "run", str(spec), "--results-dir", str(tmp_path / "results"),
                             "--data-dir", str(data), "--executor", "ray", "--address", cluster.address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**cluster.env, "PYTHONPATH": str(ROOT)})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if when(line):
            fault()
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + out, err


def test_a_lost_worker_node_does_not_crash_the_driver_and_its_cells_finish_elsewhere(cluster, tmp_path):
    started = []

    def lose_second_node():
        started.append(time.monotonic())
        cluster.kill_second_node()

    code, out, err = drive(cluster, tmp_path, lambda line: "epoch 1/4" in line, lose_second_node)
    assert started, out
    assert "Traceback" not in err and "ActorUnavailableError" not in err
    folder = tmp_path / "results" / "cluster"
    runs = {p.stem: json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")}
    assert sorted(runs) == CELLS
    # Every cell finished (retried on the head) or is recorded failed with the reason; the exit code says which.
    failed = [c for c, r in runs.items() if r["status"] == "failed"]
    assert all(runs[c]["note"] for c in failed)
    assert code == (3 if failed else 0), err
    assert (folder / "summary.md").is_file() and not list(folder.glob(".ray-probe-*"))


def test_a_lost_head_ends_the_driver_in_one_line_with_the_resume_command(cluster, tmp_path):
    started = time.monotonic()
    code, out, err = drive(cluster, tmp_path, lambda line: ": finished" in line, cluster.kill_head, SPEC_HEAD, n_train=4096)
    assert time.monotonic() - started < 120
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnistbench: error: lost the Ray cluster") and "Resume with: mnistbench run" in last
    assert f"--executor ray --address {cluster.address}" in last
    folder = tmp_path / "results" / "cluster"
    assert not list(folder.glob(".ray-probe-*"))
    finished = [p.stem for p in (folder / "runs").glob("*.json") if json.loads(p.read_text())["status"] == "finished"]
    assert finished and all(f"| {c.split('_')[0]} " in (folder / "summary.md").read_text() for c in finished)


def test_a_driver_without_the_clusters_auth_token_is_told_so_in_one_line(tmp_path):
    import secrets

    cluster = Cluster(tmp_path)
    cluster.env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    try:
        cluster._ray("start", "--head", "--port", str(cluster.port), "--num-cpus", "1", "--include-dashboard=false",
                     "--temp-dir", str(cluster.temp), "--node-ip-address", "127.0.0.1", "--disable-usage-stats")
        data = make_dataset(tmp_path / "data")
        env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        proc = subprocess.run([sys.executable, "-m", "mnistbench.cli", "run", str(write_spec(tmp_path / "cluster.yaml", SPEC)),
                               "--results-dir", str(tmp_path / "results"), "--data-dir", str(data), "--executor", "ray",
                               "--address", cluster.address], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**env, "PYTHONPATH": str(ROOT)})
    finally:
        cluster.stop()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mnistbench: error: Ray at {cluster.address} refused this driver's authentication (InvalidAuthToken): the cluster wants "
        "a token: set RAY_AUTH_MODE=token and give this driver the cluster's token (docs/scale-out.md)"]
