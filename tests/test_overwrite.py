"""Nothing finished is replaced without a word (issue 21): every door to a silent overwrite, closed.

A run file's plain name is its cell's id, which holds the matrix values and the seed only. Each test
runs a cell once, then runs the same cell id again through one door (other data, an edited spec,
another device kind, thread count, machine, model file, a checkpoint or a Ray worker of another
configuration, a run that got the cell's lock late) and shows that the first record is still there,
byte for byte, beside the second, and that the tables say what differs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import make_dataset
from mnistbench.run import runner as runner_module
from mnistbench.run.cell import execute
from mnistbench.run.checkpoint import checkpoint_path, save_checkpoint
from mnistbench.train.engine import run_cell
from mnistbench.run.executors import Sequential, Work
from mnistbench.run.ray import RayExecutor, Tally
from mnistbench.report.groups import build_report
from mnistbench.layout import weights_file
from mnistbench.results import data_identity, load_record, load_records
from mnistbench.run.runner import RunSummary, plan_run, remaining, run_spec
from mnistbench.spec.schema import parse_spec

SPEC = """\
name: doors
device: cpu
epochs: 1
batch_size: 64
eval_batch_size: 128
lr: 2.0e-3
threads: 1
matrix:
  model: [mlp-matched]
  seed: [0]
"""
CELL = "mlp-matched_seed-0"


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("mnistbench.report.plots.write_plots", lambda folder, report: [])  # tables only: fast


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("doors") / "data", n_train=128, n_test=64)


def spec(text: str = SPEC, **changes):
    raw = yaml.safe_load(text)
    raw.update(changes)
    return parse_spec(raw, "doors")


def runs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "doors" / "runs").glob("*.json"))}


def first_run(root: Path, data: Path, **kw) -> bytes:
    run_spec(spec(), root, data, **kw)
    return (root / "doors" / "runs" / f"{CELL}.json").read_bytes()


def assert_kept_beside(root: Path, first: bytes) -> Path:
    """The first record is unchanged under its name; the second has its own file (and weights) beside it."""
    files = runs(root)
    assert files[f"{CELL}.json"] == first
    other = [n for n in files if n != f"{CELL}.json"]
    assert len(other) == 1 and other[0].startswith(f"{CELL}~")
    second = root / "doors" / "runs" / other[0]
    assert weights_file(second).is_file() and load_record(second).extra["weights"]["file"] == weights_file(second).name
    return second


def labels(root: Path) -> list[str]:
    return [g.label for g in build_report(root / "doors").groups()]


# ----------------------------------------------------------------------------------- data


def gunzipped(data: Path, to: Path) -> Path:
    to.mkdir()
    for gz in data.glob("*.gz"):
        (to / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    return to


def test_the_same_bytes_gzipped_or_raw_are_the_same_data_and_are_not_run_again(data, tmp_path):
    first = first_run(tmp_path, data)
    summary = run_spec(spec(), tmp_path, gunzipped(data, tmp_path / "raw"))
    assert summary.ran == [] and summary.skipped == [CELL]
    assert runs(tmp_path) == {f"{CELL}.json": first}


def test_a_record_on_other_data_is_kept_beside_and_reported_in_its_own_section(data, tmp_path):
    first = first_run(tmp_path, data)
    other = make_dataset(tmp_path / "other", n_train=96, n_test=64)
    run_spec(spec(), tmp_path, other)
    second = assert_kept_beside(tmp_path, first)
    sections = build_report(tmp_path / "doors").sections
    assert len(sections) == 2 and load_record(second).data["identity"] != json.loads(first)["data"]["identity"]
    assert {s.context.data_identity for s in sections} == {load_record(second).data["identity"], json.loads(first)["data"]["identity"]}


def test_records_on_gzip_and_raw_files_of_one_content_share_a_section(data, tmp_path):
    run_spec(spec(), tmp_path, data)
    run_spec(spec(text=SPEC.replace("seed: [0]", "seed: [1]")), tmp_path, gunzipped(data, tmp_path / "raw"))
    report = build_report(tmp_path / "doors")
    assert len(report.sections) == 1 and [len(g.records) for g in report.groups()] == [2]


# ----------------------------------------------------------------------------------- settings


def test_an_edited_lr_keeps_the_first_record_and_the_tables_say_which_is_which(data, tmp_path):
    first = first_run(tmp_path, data)
    summary = run_spec(spec(lr=3.0e-3), tmp_path, data)
    assert [r.cell for r in summary.ran] == [CELL]
    assert_kept_beside(tmp_path, first)
    assert sorted(labels(tmp_path)) == ["mlp-matched, lr=0.002", "mlp-matched, lr=0.003"]
    md = (tmp_path / "doors" / "summary.md").read_text()
    assert "lr=0.002" in md and "lr=0.003" in md


def test_another_thread_count_is_another_measurement(data, tmp_path):
    first = first_run(tmp_path, data)
    run_spec(spec(threads=2), tmp_path, data)
    assert_kept_beside(tmp_path, first)
    assert sorted(labels(tmp_path)) == ["mlp-matched, threads=1", "mlp-matched, threads=2"]


class Threads(Sequential):
    """An executor that leaves ``threads: None`` cells a fixed count, as Ray's one-CPU tasks do."""

    def __init__(self, n: int):
        self.n = n

    def threads(self, config, resources) -> int:
        return config.threads or self.n


def test_threads_left_to_the_executor_enter_the_key_as_the_count_used(data, tmp_path):
    """Ray cells ran with 1 thread and sequential cells with 2 under one key; now each count is its own measurement."""
    text = SPEC.replace("threads: 1\n", "")
    run_spec(spec(text), tmp_path, data, executor=Threads(1))
    first = (tmp_path / "doors" / "runs" / f"{CELL}.json").read_bytes()
    summary = run_spec(spec(text), tmp_path, data, executor=Threads(2))
    assert summary.skipped == [] and [r.environment["threads"] for r in summary.ran] == [2]
    assert json.loads(first)["environment"]["threads"] == 1
    assert_kept_beside(tmp_path, first)
    assert sorted(labels(tmp_path)) == ["mlp-matched, threads=1", "mlp-matched, threads=2"]
    assert run_spec(spec(text), tmp_path, data, executor=Threads(2)).skipped == [CELL]  # and each is skipped as done


@pytest.mark.slow  # two runs in child processes; test_modelref's changed model file is the fast check of the path
def test_an_edited_model_file_keeps_the_record_of_the_first_version(data, tmp_path):
    nets = tmp_path / "nets.py"
    nets.write_text("from torch import nn\n\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    text = SPEC.replace("model: [mlp-matched]", 'model: ["lin=./nets.py:build"]')
    raw = yaml.safe_load(text)
    run_spec(parse_spec(raw, "doors", str(tmp_path / "doors.yaml")), tmp_path, data)
    (first_file,) = (tmp_path / "doors" / "runs").glob("*.json")
    first = first_file.read_bytes()
    nets.write_text(nets.read_text().replace("nn.Linear(784, 10))", "nn.Linear(784, 10), nn.Tanh())"))
    run_spec(parse_spec(raw, "doors", str(tmp_path / "doors.yaml")), tmp_path, data)
    files = runs(tmp_path)
    assert files[first_file.name] == first and len(files) == 2
    assert any("model_sha256=" in label for label in labels(tmp_path))


# ----------------------------------------------------------------------------------- device and machine


def test_a_record_of_another_device_kind_is_kept(data, tmp_path):
    """A GPU machine's record of the cell (its key says cuda) in the folder: the CPU run writes beside it."""
    first_run(tmp_path, data)
    path = tmp_path / "doors" / "runs" / f"{CELL}.json"
    raw = json.loads(path.read_text())
    raw.update(device="cuda:0", key="c" * 16, config_hash="c" * 16, config={**raw["config"], "device": "cuda"},
               environment={**raw["environment"], "gpu": {"name": "NVIDIA H200", "capability": "9.0"}})
    path.write_text(json.dumps(raw, indent=2))
    cuda = path.read_bytes()
    assert run_spec(spec(), tmp_path, data).skipped == []
    assert_kept_beside(tmp_path, cuda)
    titles = [s.context.title for s in build_report(tmp_path / "doors").sections]
    assert len(titles) == 2 and any("cuda: NVIDIA H200" in t for t in titles)


def test_a_folder_from_another_machine_is_measured_again_here_and_never_pooled(data, tmp_path):
    """Issue 22: a copied folder's cell is a different measurement on another machine kind: run, kept apart."""
    first_run(tmp_path, data)
    path = tmp_path / "doors" / "runs" / f"{CELL}.json"
    raw = json.loads(path.read_text())
    raw["environment"].update(cpu="Other CPU 7000", cpu_capability="AVX2")  # measured elsewhere, copied in
    path.write_text(json.dumps(raw, indent=2))
    copied = path.read_bytes()
    assert run_spec(spec(), tmp_path, data).skipped == []
    second = assert_kept_beside(tmp_path, copied)
    assert run_spec(spec(), tmp_path, data).skipped == [CELL]  # this machine's own record counts as done here
    report = build_report(tmp_path / "doors")
    assert len(report.sections) == 2 and [len(g.records) for g in report.groups()] == [1, 1]
    assert any("Other CPU 7000 (" in s.context.title for s in report.sections)
    assert load_record(second).key == raw["key"]  # one key, two machines: two measurements


def test_machines_that_agree_on_every_recorded_field_are_one_and_older_records_join_them():
    from mnistbench.results import Machine

    full = Machine("cpu", "AMD EPYC", 2, "AVX512", ("avx2", "avx512f"))
    old = Machine("cpu", "AMD EPYC", 2, None, None)  # written before capability and flags were recorded
    assert full.matches(old) and old.matches(full)
    assert not full.matches(dataclasses.replace(full, flags=("avx2",)))
    assert not full.matches(dataclasses.replace(old, count=4))


# ----------------------------------------------------------------------------------- checkpoints, Ray, late locks


def test_a_checkpoint_of_another_configuration_of_the_cell_is_left_alone(data, tmp_path):
    """An edited spec's cell, interrupted: its checkpoint survives a run of the old configuration, and resumes after."""
    plan = plan_run(spec(lr=3.0e-3), tmp_path, data, allow_download=False)
    task = plan.tasks[0]
    states = []
    run_cell(task.cell.config, plan.datasets["mnist"], on_epoch=lambda m, s: states.append(s()))
    ckpt = checkpoint_path(plan.folder, CELL)
    save_checkpoint(ckpt, task.key, states[-1])
    theirs = ckpt.read_bytes()
    run_spec(spec(), tmp_path, data)
    assert ckpt.read_bytes() == theirs  # not overwritten, not deleted
    summary = run_spec(spec(lr=3.0e-3), tmp_path, data)
    assert summary.ran[0].extra["resumed_from_epoch"] == 1 and not ckpt.exists()


@contextmanager
def _ray_stub():
    class Lost(Exception):
        pass

    yield SimpleNamespace(exceptions=SimpleNamespace(RayTaskError=Lost, RayError=Lost), get=lambda ref: ref)


def test_the_ray_driver_writes_a_workers_record_under_the_name_chosen_for_it(data, tmp_path):
    """A worker without the shared folder returns its record; the driver never writes it over another configuration's."""
    first = first_run(tmp_path, data)
    plan = plan_run(spec(lr=3.0e-3), tmp_path, data, allow_download=False)
    (task,) = remaining(plan, False, RunSummary(plan.folder))
    scratch = tmp_path / "scratch"
    record = execute(dataclasses.replace(task, folder=scratch), plan.datasets["mnist"])
    run_file = task.run_file(scratch)
    returned = (record, False, 0, weights_file(run_file).read_bytes())
    executor = RayExecutor.__new__(RayExecutor)
    executor.max_retries = 0
    with _ray_stub() as ray:
        executor._collect(ray, returned, task, Work([task], plan.datasets, plan.folder), None, Tally({}), lambda e: None, None)
    assert_kept_beside(tmp_path, first)


def test_a_run_that_gets_the_cells_lock_after_another_run_wrote_it_does_not_replace_it(data, tmp_path, monkeypatch):
    """Shards and concurrent runs: the file is chosen under the cell's lock, not when the run was planned."""
    real_locks = runner_module.cell_locks
    wrote = {}

    @contextmanager
    def late(folder, cells):
        if not wrote:  # another run of the old configuration finished between our plan and our lock
            wrote["busy"] = True
            wrote["first"] = first_run(tmp_path, data)
        with real_locks(folder, cells):
            yield

    monkeypatch.setattr(runner_module, "cell_locks", late)
    run_spec(spec(lr=3.0e-3), tmp_path, data)
    assert_kept_beside(tmp_path, wrote["first"])


# ----------------------------------------------------------------------------------- --force and older records


def test_force_replaces_the_same_measurement_only_and_says_so(data, tmp_path):
    first = first_run(tmp_path, data)
    run_spec(spec(lr=3.0e-3), tmp_path, data)
    second = assert_kept_beside(tmp_path, first)
    before, events = second.read_bytes(), []
    summary = run_spec(spec(lr=3.0e-3), tmp_path, data, force=True, on_event=events.append)
    assert [r.cell for r in summary.ran] == [CELL]
    assert runs(tmp_path)[f"{CELL}.json"] == first and len(runs(tmp_path)) == 2
    assert second.read_bytes() != before and load_record(second).key == summary.ran[0].key
    said = [e.message for e in events if e.kind == "warning"]
    assert len(said) == 1 and second.name in said[0] and "replaced" in said[0]


def test_a_diverged_record_of_another_configuration_is_kept(data, tmp_path):
    first_run(tmp_path, data)
    path = tmp_path / "doors" / "runs" / f"{CELL}.json"
    raw = json.loads(path.read_text())
    raw["epochs"][-1]["test_loss"] = None
    raw["non_finite"] = {"epochs[0].test_loss": "nan"}
    path.write_text(json.dumps(raw, indent=2))
    diverged = path.read_bytes()
    assert load_record(path).status == "diverged"
    run_spec(spec(lr=3.0e-3), tmp_path, data)
    assert_kept_beside(tmp_path, diverged)


def as_written_before(path: Path, legacy_key: str, threads: int) -> None:
    """Rewrite a record as an earlier version wrote it: keyed on the stored files' hashes, no content hashes."""
    raw = json.loads(path.read_text())
    for f in raw["data"]["files"]:
        f.pop("content_sha256", None)
    raw["data"]["identity"] = data_identity([f["sha256"] for f in raw["data"]["files"]])
    raw.update(key=legacy_key, config_hash=legacy_key, environment={**raw["environment"], "threads": threads})
    path.write_text(json.dumps(raw, indent=2))


def test_records_written_before_content_hashing_count_as_done_only_with_the_thread_count_used(data, tmp_path):
    text = SPEC.replace("threads: 1\n", "")
    run_spec(spec(text), tmp_path, data, executor=Threads(2))
    plan = plan_run(spec(text), tmp_path, data, allow_download=False, threads_for=Threads(2).threads)
    path = tmp_path / "doors" / "runs" / f"{CELL}.json"
    as_written_before(path, plan.tasks[0].measurement.legacy_key, threads=2)
    assert run_spec(spec(text), tmp_path, data, executor=Threads(2)).skipped == [CELL]
    as_written_before(path, plan.tasks[0].measurement.legacy_key, threads=1)  # a Ray cell's record, say
    old = path.read_bytes()
    assert run_spec(spec(text), tmp_path, data, executor=Threads(2)).skipped == []
    assert_kept_beside(tmp_path, old)


def test_records_on_stored_hashes_alone_share_the_data_identity_of_newer_records_on_the_same_files(data, tmp_path):
    """An older record on the .gz files and a newer one on the same files gunzipped: one data identity, one section."""
    run_spec(spec(), tmp_path, data)
    plan = plan_run(spec(), tmp_path, data, allow_download=False)
    as_written_before(tmp_path / "doors" / "runs" / f"{CELL}.json", plan.tasks[0].measurement.legacy_key, threads=1)
    run_spec(spec(text=SPEC.replace("seed: [0]", "seed: [1]")), tmp_path, data)  # records both hashes of the .gz files
    run_spec(spec(text=SPEC.replace("seed: [0]", "seed: [2]")), tmp_path, gunzipped(data, tmp_path / "raw"))
    report = build_report(tmp_path / "doors")
    assert len(report.sections) == 1 and [len(g.records) for g in report.groups()] == [3]


def test_the_shipped_mnist_records_have_the_data_identity_of_a_run_on_the_same_files_today(real_data):
    from mnistbench.data.datasets import content_hashes, load_dataset
    from mnistbench.results import data_identity

    root = Path(__file__).resolve().parent.parent
    folder = next(p for p in (root / "reference" / "cpu", root / "results" / "cpu") if p.is_dir())
    identity = data_identity(content_hashes(load_dataset("mnist", real_data, allow_download=False)))
    assert {r.data["identity"] for r in load_records(folder)} == {identity}
    assert all(f["file"].endswith(".gz") for r in load_records(folder) for f in r.data["files"])


def test_temporaries_of_a_cells_second_measurement_are_removed_at_the_next_start_and_no_others(tmp_path):
    from mnistbench.run.locks import remove_cell_temporaries

    runs_folder = tmp_path / "runs"
    runs_folder.mkdir()
    mine = [runs_folder / f".{CELL}~3f9a2c1d.json.ab12cd34.tmp", runs_folder / f".{CELL}~3f9a2c1d.safetensors.ab12cd34.tmp"]
    theirs = runs_folder / f".{CELL}_lr-0.1~3f9a2c1d.json.ab12cd34.tmp"
    for p in [*mine, theirs]:
        p.write_text("half")
    remove_cell_temporaries(tmp_path, [CELL])
    assert not any(p.exists() for p in mine) and theirs.exists()


def test_two_machines_whose_words_agree_get_sections_told_apart_by_their_machine_id(tmp_path):
    from records_factory import ENVIRONMENT, make_record, report_of

    env = {**ENVIRONMENT, "cpu_capability": "AVX2", "cpu_flags": ["avx", "avx2"]}
    records = [make_record("lenet5", 0, environment=env),
               make_record("lenet5", 1, environment={**env, "cpu_flags": ["avx", "avx2", "fma"]})]
    titles = [s.context.title for s in report_of(records, tmp_path).sections]
    assert len(titles) == 2 and len(set(titles)) == 2 and all("[machine " in t for t in titles)
