"""Scale-out: shards of one spec sharing a folder, and Ray running the same cells with the same files.

The Ray tests share ONE local Ray session (2 CPUs, 2 logical GPUs, loopback only, no
dashboard, usage stats off) and skip when Ray is not installed (`pip install -e '.[ray]'`).
Faults are injected inside the Ray workers by a worker setup hook (``ray_faults.py``); a test
arms a fault by creating a marker file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from conftest import TINY_SPEC, make_dataset, write_spec
from cli_helpers import resume_hint
from mnistbench.cli import app, resume_command
from mnistbench.errors import MnistbenchError
from mnistbench.run.ray import RayExecutor, ray_options
from mnistbench.run.runner import run_spec
from mnistbench.spec.selection import Selection
from mnistbench.spec.schema import CellConfig, Resources, load_spec

# A Ray session and concurrent shard processes: `make test-slow` (run by .ci/run), not `make test`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")
SPEC = TINY_SPEC.replace("name: tiny", "name: scale")
CELLS = ["lenet5_seed-0", "lenet5_seed-1", "mlp-matched_seed-0", "mlp-matched_seed-1"]
UNSHARED = ["lenet5_seed-0", "mlp-matched_seed-1"]  # cells whose task sees no shared folder in the faulty run


def epochs_of(folder: Path) -> dict[str, list[tuple]]:
    return {p.stem: [tuple(e[k] for k in METRICS) for e in json.loads(p.read_text())["epochs"]]
            for p in sorted((folder / "runs").glob("*.json"))}


def accuracy_columns(folder: Path) -> list[dict]:
    keep = ("model", "parameters", "epochs", "seeds", "final_test_acc_mean", "final_test_acc_std", "best_test_acc_max",
            "final_test_loss_mean", "final_train_loss_mean")
    rows = csv.DictReader(io.StringIO((folder / "summary.csv").read_text()))
    return [{k: r.get(k) for k in keep} for r in rows]


def record(folder: Path, cell: str) -> dict:
    return json.loads((folder / "runs" / f"{cell}.json").read_text())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny data, the spec, and its sequential run: the reference every other run must match."""
    root = tmp_path_factory.mktemp("scale")
    data = make_dataset(root / "data")
    spec_path = write_spec(root / "scale.yaml", SPEC)
    run_spec(load_spec(spec_path), root / "reference", data)
    return root, data, spec_path, root / "reference" / "scale"


# --------------------------------------------------------------------------- shards (no engine)


def test_three_shards_run_concurrently_into_one_folder_and_merge_into_the_sequential_tables(setup, tmp_path):
    _, data, spec_path, reference = setup
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "mnistbench.cli", "run", str(spec_path), "--results-dir", str(tmp_path),
                          "--data-dir", str(data), "--shard", f"{i}/3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in (1, 2, 3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    # Every 3rd cell in spec order: shard 1 has cells 1 and 4, shards 2 and 3 one each.
    assert "2 cells run" in outputs[0][0] and "1 cell run" in outputs[1][0] and "1 cell run" in outputs[2][0]
    out = tmp_path / "scale"
    from typer.testing import CliRunner

    assert CliRunner().invoke(app, ["report", "--check", str(out)]).exit_code == 0  # the last shard's report is whole
    merged = CliRunner().invoke(app, ["report", str(out)])
    assert merged.exit_code == 0, merged.output
    assert epochs_of(out) == epochs_of(reference)
    assert accuracy_columns(out) == accuracy_columns(reference)
    assert sorted(p.name for p in out.glob("last_run*.json")) == [f"last_run.shard-{i}-of-3.json" for i in (1, 2, 3)]
    assert not list(out.rglob("*.tmp"))


def test_shards_split_the_cells_once_each_in_spec_order():
    spec = load_spec(write_spec(Path(os.environ.get("TMPDIR", "/tmp")) / f"shards-{os.getpid()}.yaml",
                                SPEC.replace("seed: [0, 1]", "seed: [0, 1, 2, 3, 4]")))
    cells = spec.cells()
    picked = [Selection(shard=(i, 4)).pick(cells) for i in range(1, 5)]
    assert sorted(k for p in picked for k in p) == list(range(len(cells)))
    assert [len(p) for p in picked] == [3, 3, 2, 2]
    assert Selection(cells=("mlp-matched_seed-3",)).pick(cells) == [8]


def test_a_shard_removes_only_the_temporary_files_of_its_own_cells(setup, tmp_path):
    _, data, spec_path, _ = setup
    runs, ckpts = tmp_path / "scale" / "runs", tmp_path / "scale" / "checkpoints"
    runs.mkdir(parents=True)
    ckpts.mkdir()
    mine = [runs / ".lenet5_seed-0.json.abcd_123.tmp", ckpts / ".lenet5_seed-0.pt.x1y2z3w4.tmp"]
    theirs = [runs / ".lenet5_seed-1.json.abcd_123.tmp", ckpts / ".mlp-matched_seed-0.pt.x1y2z3w4.tmp"]
    for p in mine + theirs:
        p.write_text("being written by another run")
    summary = run_spec(load_spec(spec_path), tmp_path, data, selection=Selection(cells=("lenet5_seed-0",)))
    assert [r.cell for r in summary.ran] == ["lenet5_seed-0"]
    assert not any(p.exists() for p in mine) and all(p.exists() for p in theirs)
    assert (tmp_path / "scale" / "summary.csv").is_file()  # the report covers what the folder holds


def test_resume_hint_repeats_every_option():
    hint = resume_hint("bench/x.yaml", "--results-dir", "out", "--data-dir", "d", "--no-download", "--executor", "ray",
                       "--address", "auto", "--max-retries", "5", "--shard", "2/8")
    assert hint == ("mnistbench run bench/x.yaml --results-dir out --data-dir d --no-download --executor ray "
                    "--address auto --max-retries 5 --shard 2/8")
    assert resume_hint("s.yaml", "--results-dir", "r", "--cell", "a", "--cell", "b").endswith("--cell a --cell b")
    assert resume_hint("s.yaml", "--engine", "ray") == "mnistbench run s.yaml --results-dir results --executor ray"


def test_the_resume_hint_repeats_an_option_added_later_without_being_edited():
    """It is read from the parsed command line: any command's options, not a list of run's."""
    later = typer.Typer()

    @later.command()
    def run(spec: Path, results_dir: Path = typer.Option(Path("results"), "--results-dir"),
            new_knob: int = typer.Option(0, "--new-knob"), force: bool = typer.Option(False, "--force"),
            loud: bool = typer.Option(False, "--loud")) -> None:
        pass

    ctx = typer.main.get_command(later).make_context("run", ["s.yaml", "--new-knob", "7", "--force", "--loud"])
    assert resume_command(ctx) == "mnistbench run s.yaml --results-dir results --new-knob 7 --loud"


def _one_line_error(args: list[str], words: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [str(a) for a in args])
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("mnistbench: error: "), result.output
    assert words in lines[0], lines[0]


@pytest.mark.parametrize("args, words", [
    (["--shard", "4/3"], "--shard 4/3: expected I/N with 1 <= I <= N"),
    (["--shard", "two"], "--shard two: expected I/N"),
    (["--cell", "nope"], "--cell nope: no such cell in this spec (cells: lenet5_seed-0,"),
    (["--shard", "1/2", "--cell", "lenet5_seed-0"], "give one of them"),
    (["--executor", "dask"], "Invalid value for '--executor': 'dask' is not one of 'sequential', 'ray'."),
    (["--engine", "dask"], "Invalid value for '--engine': 'dask' is not one of 'sequential', 'ray'."),
    (["--address", "auto"], "--address is for --executor ray"),
    (["--executor", "ray", "--max-retries", "x"], "Invalid value for '--max-retries'"),
    (["--max-retries", "101"], "Invalid value for '--max-retries': Input should be less than or equal to 100"),
    (["--engine", "ray", "--executor", "ray"], "--engine is the old name of --executor: give --executor only"),
])
def test_bad_scale_out_options_are_one_line_errors(setup, args, words, tmp_path):
    _, data, spec_path, _ = setup
    _one_line_error(["run", spec_path, "--results-dir", tmp_path, "--data-dir", data, *args], words)


def test_engine_ray_without_ray_says_which_extra_to_install(setup, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    _, data, spec_path, _ = setup
    _one_line_error(["run", spec_path, "--results-dir", tmp_path, "--data-dir", data, "--executor", "ray"],
                    "--executor ray needs Ray, which is not installed: pip install 'mnistbench[ray]'")
    assert not (tmp_path / "scale").exists()


def test_import_help_and_a_ray_dry_run_load_neither_ray_nor_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import mnistbench\n"
        "from mnistbench.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(app, ['run', '--help']).exit_code == 0\n"
        "r = CliRunner().invoke(app, ['run', 'bench/smoke.yaml', '--dry-run', '--executor', 'ray', '--shard', '1/2'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_resources_default_per_device_and_cuda_cells_always_get_a_gpu():
    cpu = CellConfig(model="lenet5", device="cpu", threads=2)
    cuda = CellConfig(model="lenet5", device="cuda")
    assert ray_options(cpu, Resources())["num_cpus"] == 2 and ray_options(cpu, Resources())["num_gpus"] == 0
    assert (ray_options(cuda, Resources())["num_cpus"], ray_options(cuda, Resources())["num_gpus"]) == (1, 1)
    assert ray_options(cuda, Resources(gpus=0.25))["num_gpus"] == 0.25
    assert ray_options(cuda, Resources(), max_retries=5)["max_retries"] == 5
    assert ray_options(cuda, Resources())["retry_exceptions"] is False  # an exception in a cell is not retried
    with pytest.raises(MnistbenchError, match="resources.gpus: 0 would leave the cuda cells without a GPU"):
        ray_options(cuda, Resources(gpus=0))


@pytest.mark.parametrize("text, words", [
    ("resources: {gpus: 1.5}", "resources.gpus: a share of one GPU (0.5, 0.25) or a whole number"),
    ("resources: {cpu: 1}", "resources.cpu: unknown key (known: cpus, gpus)"),
    ("resources: {cpus: 0}", "resources.cpus: Input should be greater than 0"),
    ("resources: 2", "resources: must be a mapping"),
])
def test_bad_resources_are_one_line_spec_errors(tmp_path, text, words):
    with pytest.raises(MnistbenchError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_spec(write_spec(tmp_path / "x.yaml", SPEC + text + "\n"))


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray process listens on 127.0.0.1 only
    ray = pytest.importorskip("ray")
    import ray_faults

    ray.cloudpickle.register_pickle_by_value(ray_faults)  # the workers get its code, not an import of tests/
    faults = tmp_path_factory.mktemp("faults")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": ray_faults.hook(str(faults))})
    yield ray, faults
    ray.shutdown()


def test_ray_listens_on_loopback_only(ray_session):
    ray, _ = ray_session
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}


def test_ray_runs_the_cells_with_the_sequential_metrics_files_and_tables(ray_session, setup, tmp_path):
    ray, _ = ray_session
    _, data, spec_path, reference = setup
    events = []
    summary = run_spec(load_spec(spec_path), tmp_path, data, on_event=events.append, executor=RayExecutor())
    out = tmp_path / "scale"
    assert sorted(r.cell for r in summary.ran) == CELLS and summary.cells("finished") == [r.cell for r in summary.ran]
    assert epochs_of(out) == epochs_of(reference)
    assert accuracy_columns(out) == accuracy_columns(reference)
    node = ray.get_runtime_context().get_node_id()
    for cell in CELLS:
        r = record(out, cell)
        assert r["key"] == record(reference, cell)["key"]
        assert r["extra"]["executor"] == "ray" and r["extra"]["ray"]["node_id"] == node
        assert r["extra"]["ray"]["shared_folder"] is True and r["extra"]["ray"]["resources"] == {"CPU": 1.0}
        assert r["extra"]["resumed_from_epoch"] == 0 and r["environment"]["threads"] == 1
    assert [e.message for e in events if e.kind == "status"][-1] == "4/4 done, 0 running, 0 failed, 0 retried"
    assert sum(e.kind == "epoch" for e in events) == 8  # every epoch of every cell reached the progress display
    assert not list(out.glob(".ray-probe-*")) and not list(out.rglob("*.tmp"))
    again = run_spec(load_spec(spec_path), tmp_path, data, executor=RayExecutor())
    assert again.ran == [] and sorted(again.skipped) == CELLS  # finished cells are skipped by their key


@pytest.fixture(scope="module")
def faulty_run(ray_session, setup, tmp_path_factory):
    """One Ray run with faults armed: lenet5_seed-1's worker dies after epoch 1, mlp-matched_seed-0 raises,
    and the tasks of lenet5_seed-0 and mlp-matched_seed-1 do not see the results folder."""
    _, faults = ray_session
    _, data, spec_path, _ = setup
    root = tmp_path_factory.mktemp("faulty")
    armed = [faults / "die-lenet5_seed-1-after-epoch-1", faults / "raise-mlp-matched_seed-0",
             *(faults / f"no-shared-folder-{c}" for c in UNSHARED)]
    for marker in armed:
        marker.touch()
    events = []
    try:
        summary = run_spec(load_spec(spec_path), root, data, on_event=events.append, executor=RayExecutor(max_retries=2))
    finally:
        for marker in armed[1:]:
            marker.unlink()
    return summary, events, root / "scale", faults


def test_without_a_shared_folder_the_driver_writes_the_records(faulty_run, setup):
    from mnistbench.run.ray import scratch_folder

    summary, _, out, _ = faulty_run
    reference = setup[3]
    assert sorted(p.stem for p in (out / "runs").glob("*.json")) == CELLS
    assert {c: record(out, c)["extra"]["ray"]["shared_folder"] for c in CELLS} == {c: c not in UNSHARED for c in CELLS}
    assert {c: epochs_of(out)[c] for c in UNSHARED} == {c: epochs_of(reference)[c] for c in UNSHARED}
    scratch = scratch_folder(out.resolve())
    assert scratch.is_dir() and not list(scratch.rglob("*.json")) and not list(scratch.rglob("*.pt"))  # nothing left behind
    assert sorted(r.cell for r in summary.ran) == CELLS


def test_a_worker_killed_after_epoch_1_is_retried_and_resumes_to_the_same_metrics(faulty_run, setup):
    # The task saw the results folder (a shared file system): the retry, on any node, finds the checkpoint of epoch 1 there.
    summary, events, out, faults = faulty_run
    reference = setup[3]
    assert not (faults / "die-lenet5_seed-1-after-epoch-1").exists()  # the fault fired
    killed = record(out, "lenet5_seed-1")
    assert killed["status"] == "finished" and killed["extra"]["resumed_from_epoch"] == 1
    assert killed["extra"]["ray"]["shared_folder"] is True
    assert epochs_of(out)["lenet5_seed-1"] == epochs_of(reference)["lenet5_seed-1"]
    assert any(e.kind == "warning" and "lenet5_seed-1: its Ray worker or node was lost; running it again (attempt 2)" in e.message
               for e in events)
    assert [e.message for e in events if e.kind == "status"][-1] == "4/4 done, 0 running, 1 failed, 1 retried"


def test_a_cell_that_raises_is_recorded_failed_once_and_the_others_finish(faulty_run, setup):
    summary, _, out, faults = faulty_run
    reference = setup[3]
    assert summary.cells("failed") == ["mlp-matched_seed-0"]
    assert sorted(summary.cells("finished")) == [c for c in CELLS if c != "mlp-matched_seed-0"]
    failed = record(out, "mlp-matched_seed-0")
    assert failed["status"] == "failed" and failed["note"] == "RuntimeError: injected failure"
    assert (faults / "attempts-mlp-matched_seed-0").read_text() == "attempt\n"  # not retried by Ray
    finished = {k: v for k, v in epochs_of(out).items() if k != "mlp-matched_seed-0"}
    assert finished == {k: v for k, v in epochs_of(reference).items() if k != "mlp-matched_seed-0"}
    assert "mlp-matched" in (out / "summary.md").read_text()


def test_gpu_shares_map_to_cuda_visible_devices(ray_session, setup, tmp_path):
    from mnistbench.run.ray import remote_function

    ray, _ = ray_session
    _, data, _, reference = setup

    # A cell asking for half a GPU on a node of 2 (logical) GPUs sees exactly one of them.
    spec = load_spec(write_spec(tmp_path / "scale.yaml", SPEC + "resources: {cpus: 1, gpus: 0.5}\n"))
    run_spec(spec, tmp_path, data, executor=RayExecutor(), selection=Selection(cells=("mlp-matched_seed-1",)))
    placed = record(tmp_path / "scale", "mlp-matched_seed-1")["extra"]["ray"]
    assert placed["cuda_visible_devices"] in ("0", "1") and placed["resources"] == {"CPU": 1.0, "GPU": 0.5}
    assert epochs_of(tmp_path / "scale")["mlp-matched_seed-1"] == epochs_of(reference)["mlp-matched_seed-1"]

    # Tasks built as the executor builds them, held at the same time: halves pack two to a GPU,
    # whole GPUs one each, a CPU task sees none; each GPU task has a process of its own.
    @ray.remote(num_cpus=0)
    class Barrier:
        def __init__(self):
            self.n = 0

        def arrive(self):
            self.n += 1

        def count(self):
            return self.n

    def visible(barrier, parties):
        barrier.arrive.remote()
        deadline = time.monotonic() + 60
        while ray.get(barrier.count.remote()) < parties and time.monotonic() < deadline:
            time.sleep(0.02)
        return os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()

    def concurrently(config: CellConfig, resources: Resources, parties: int) -> list:
        options = {k: v for k, v in ray_options(config, resources).items() if k in ("num_cpus", "num_gpus")}
        task, barrier = remote_function(ray, visible, options["num_gpus"] > 0), Barrier.remote()
        return ray.get([task.options(**options).remote(barrier, parties) for _ in range(parties)], timeout=120)

    cuda, cpu = CellConfig(model="lenet5", device="cuda"), CellConfig(model="lenet5", device="cpu", threads=1)
    halves = concurrently(cuda, Resources(cpus=0.25, gpus=0.5), 4)
    assert sorted(d for d, _ in halves) == ["0", "0", "1", "1"]
    wholes = concurrently(cuda, Resources(cpus=0.5), 2)
    assert sorted(d for d, _ in wholes) == ["0", "1"]
    assert len({pid for _, pid in halves + wholes}) == 6  # no GPU task reused a worker process
    assert concurrently(cpu, Resources(), 1)[0][0] in (None, "")
