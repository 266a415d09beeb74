"""The numbers cannot lie: every table matches exactly the run files present (issue: integrity, points 1-10).

Each test names the way a table used to misstate what ran, and shows it no longer does.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import signal
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_factory import ENVIRONMENT, make_record, write_records
from typer.testing import CliRunner

from conftest import make_dataset, write_spec
from mnistbench.run.checkpoint import checkpoint_path, save_checkpoint
from cli_helpers import resume_hint
from mnistbench.cli import app
from mnistbench.data.datasets import load_dataset
from mnistbench.train.engine import run_cell
from mnistbench.errors import Interrupted, MnistbenchError
from mnistbench.report.groups import build_report
from mnistbench.models.zoo import MODELS
from mnistbench.report.build import check_report, write_report
from mnistbench.results import load_record, load_records
from mnistbench.run.runner import finished_runs, plan_run, run_spec
from mnistbench.spec.schema import Cell, CellConfig, check_unique, load_spec, parse_spec

SPEC = """\
name: integrity
device: cpu
epochs: 2
batch_size: 64
eval_batch_size: 128
lr: 3.0e-3
schedule: onecycle
threads: 1
matrix:
  model: [mlp-matched]
  seed: [0, 1]
"""
ACCURACY = ("model", "seeds", "diverged", "failed", "final_test_acc_mean", "final_test_acc_std", "final_test_loss_mean")


def rows(folder: Path) -> list[dict]:
    return [{k: r[k] for k in ACCURACY} for r in csv.DictReader(io.StringIO((folder / "summary.csv").read_text()))]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("integrity") / "data", n_train=256, n_test=128)


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> Path:
    """The reference: one uninterrupted run of SPEC."""
    root = tmp_path_factory.mktemp("clean")
    run_spec(parse_spec(_yaml(SPEC), "integrity"), root, data)
    return root / "integrity"


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def run(text: str, root: Path, data, **kw):
    return run_spec(parse_spec(_yaml(text), "integrity"), root, data, **kw)


# 1 -------------------------------------------------------------------------------------------


def test_a_cell_that_diverged_in_its_last_epoch_and_resumes_from_a_complete_checkpoint_is_diverged(data, tmp_path):
    """The process died after the last epoch's checkpoint and before the run file: the resumed record is still diverged."""
    spec = parse_spec(_yaml(SPEC.replace("seed: [0, 1]", "seed: [0]")), "integrity")
    plan = plan_run(spec, tmp_path, data, allow_download=False, force=False)
    task = plan.tasks[0]
    states = []
    run_cell(task.cell.config, plan.datasets["mnist"], on_epoch=lambda m, state: states.append(state()))
    last = states[-1]
    last.epochs[-1] = replace(last.epochs[-1], train_loss=math.nan)  # the loss became NaN in the last epoch
    save_checkpoint(checkpoint_path(plan.folder, task.cell.id), task.key, last)

    summary = run_spec(spec, tmp_path, data)
    record = load_record(plan.folder / "runs" / f"{task.cell.id}.json")
    assert summary.cells("diverged") == [task.cell.id]
    assert record.status == "diverged" and "nan" in record.note
    row = next(csv.DictReader(io.StringIO((plan.folder / "summary.csv").read_text())))
    assert (row["diverged"], row["final_test_acc_mean"]) == ("1", "")  # not counted in the mean


def test_a_run_file_that_says_finished_over_a_nan_loss_is_read_as_diverged(tmp_path):
    r = make_record("lenet5", 0)
    r.epochs[-1] = replace(r.epochs[-1], test_loss=math.nan)
    write_records(tmp_path / "demo", [r])  # status "finished", as a resumed 0.1 run wrote it
    assert load_records(tmp_path / "demo")[0].status == "diverged"


# 2 -------------------------------------------------------------------------------------------


def test_moving_a_setting_out_of_the_matrix_does_not_train_the_same_cell_again(data, tmp_path, clean):
    """Same configuration, another matrix layout (so another cell id): skipped by its key, counted once."""
    shutil.copytree(clean, tmp_path / "integrity")  # SPEC's finished run
    relaid = SPEC.replace("  seed: [0, 1]\n", "  seed: [0, 1]\n  lr: [3.0e-3]\n").replace("lr: 3.0e-3\n", "", 1)
    assert [c.id for c in parse_spec(_yaml(relaid), "integrity").cells()][0] == "mlp-matched_seed-0_lr-0.003"
    summary = run(relaid, tmp_path, data)
    assert summary.ran == [] and len(summary.skipped) == 2
    assert rows(tmp_path / "integrity") == rows(clean)


def test_a_run_file_copied_in_twice_is_counted_once_and_named(clean, tmp_path):
    folder = tmp_path / "integrity"
    shutil.copytree(clean, folder)
    shutil.copy(folder / "runs" / "mlp-matched_seed-0.json", folder / "runs" / "copy-of-seed-0.json")
    write_report(folder, plots=False)
    assert rows(folder) == rows(clean)  # 2 seeds, not 3
    md = (folder / "summary.md").read_text()
    assert "copy-of-seed-0.json repeats the configuration and seed of mlp-matched_seed-0.json" in md


def test_two_variants_that_are_the_same_cell_are_a_spec_error():
    with pytest.raises(MnistbenchError, match="cell lenet5_seed-0 is listed twice"):
        parse_spec({"model": "lenet5", "variants": [{}, {}]}, "t")


def test_two_cells_with_one_id_are_a_spec_error():
    a, b = CellConfig(model="lenet5", lr=0.1), CellConfig(model="lenet5", lr=0.2)
    with pytest.raises(MnistbenchError, match="two different cells would share the id lenet5_x"):
        check_unique([Cell("lenet5_x", a), Cell("lenet5_x", b)], "t")


# 3 -------------------------------------------------------------------------------------------


def test_device_auto_is_keyed_by_the_device_it_resolves_to(data, tmp_path, clean, monkeypatch):
    shutil.copytree(clean, tmp_path / "integrity")  # SPEC's finished run
    auto = SPEC.replace("device: cpu", "device: auto")
    assert run(auto, tmp_path, data).ran == []  # on this CPU machine, auto is the cpu: already done
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the same folder on a GPU machine
    plan = plan_run(parse_spec(_yaml(auto), "integrity"), tmp_path, data, allow_download=False, force=False)
    assert [t.cell.config.device for t in plan.tasks] == ["cuda", "cuda"]
    assert not any(t.key in finished_runs(plan.folder) for t in plan.tasks)


# 4 -------------------------------------------------------------------------------------------


def test_a_bare_data_dir_is_refused_for_a_spec_of_two_datasets(data, tmp_path):
    two = SPEC.replace("  seed: [0, 1]", "  seed: [0]\n  dataset: [mnist, fashion-mnist]")
    with pytest.raises(MnistbenchError, match="uses 2 datasets .*--data-dir fashion-mnist=PATH"):
        run(two, tmp_path, data)


def test_data_dirs_are_given_per_dataset_and_each_run_records_its_data_identity(tmp_path):
    mnist = make_dataset(tmp_path / "m")
    fashion = make_dataset(tmp_path / "f", n_train=192)  # other files, another identity
    two = SPEC.replace("  seed: [0, 1]", "  seed: [0]\n  dataset: [mnist, fashion-mnist]").replace("epochs: 2", "epochs: 1")
    run(two, tmp_path / "r", {"mnist": mnist, "fashion-mnist": fashion})
    records = {r.config["dataset"]: r for r in load_records(tmp_path / "r" / "integrity")}
    assert records["mnist"].data["identity"] != records["fashion-mnist"].data["identity"]
    report = build_report(tmp_path / "r" / "integrity")
    assert len(report.sections) == 2  # never pooled under one label


def test_a_folder_with_another_datasets_official_files_is_refused(real_data):
    with pytest.raises(MnistbenchError, match="holds MNIST's official files, not Fashion-MNIST's"):
        load_dataset("fashion-mnist", real_data, allow_download=False)


def test_the_cli_takes_data_dirs_by_dataset_name(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", SPEC)
    bad = CliRunner().invoke(app, ["run", str(spec), "--data-dir", "mnst=/x", "--results-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown dataset 'mnst'" in bad.output


# 5 -------------------------------------------------------------------------------------------


def test_a_rerun_that_skips_every_cell_still_rebuilds_the_tables(clean, tmp_path, data):
    folder = tmp_path / "integrity"
    shutil.copytree(clean, folder)
    (folder / "summary.csv").write_text("model,seeds\nlenet5,3\n")  # stale, e.g. from before a crash
    (folder / "runs" / "mlp-matched_seed-1.json").unlink()
    assert check_report(folder)  # the manifest knows the tables are out of date
    run(SPEC.replace("seed: [0, 1]", "seed: [0]"), tmp_path, data)
    assert [r["seeds"] for r in rows(folder)] == ["1"]
    assert check_report(folder) == []


def test_report_check_names_what_is_stale(clean, tmp_path):
    folder = tmp_path / "integrity"
    shutil.copytree(clean, folder)
    assert check_report(folder) == []
    (folder / "summary.md").write_text("old\n")
    shutil.copy(folder / "runs" / "mlp-matched_seed-0.json", folder / "runs" / "z.json")
    assert check_report(folder) == ["run file z.json is not in the tables", "summary.md is not the one built with the others"]
    result = CliRunner().invoke(app, ["report", str(folder), "--check"])
    assert result.exit_code == 1 and "tables out of date" in result.output


# 6 -------------------------------------------------------------------------------------------


def test_a_folder_merged_from_two_specs_and_two_devices_gives_separate_labelled_sections(tmp_path):
    gpu_env = {**ENVIRONMENT, "gpu": {"name": "NVIDIA H200"}, "torch_cuda": "12.8"}
    records = [make_record("lenet5", s, spec=spec, device=device, final_accuracy=acc, batch_size=batch,
                           environment=gpu_env if device == "cuda" else None)
               for spec, device, acc, batch in (("a", "cpu", 0.99, 128), ("b", "cpu", 0.98, 256), ("a", "cuda", 0.97, 128))
               for s in range(2)]
    for r in records:
        r.cell = f"{r.spec}-{r.device}-{r.cell}"  # each machine's files, merged into one folder
    records[-1].extra["roofline"] = {"peak_gflops": 1.0, "train_gflops": 1.0, "eval_gflops": 1.0,
                                     "train_fraction_of_peak": 1.0, "eval_fraction_of_peak": 1.0}  # only in a later group
    folder = write_records(tmp_path / "mixed", records)
    write_report(folder, plots=False)
    table = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    assert [(r["spec"], r["device"], r["seeds"], r["final_test_acc_mean"]) for r in table] == [
        ("a", "cpu: Test CPU 9000 (4 CPUs)", "2", "0.99"),
        ("a", "cuda: NVIDIA H200", "2", "0.97"),
        ("b", "cpu: Test CPU 9000 (4 CPUs)", "2", "0.98"),
    ]
    md = (folder / "summary.md").read_text()
    assert md.startswith("# a + b: summary")
    assert "## a · mnist (data " in md and "· cuda: NVIDIA H200" in md
    assert md.count("### Environment") == 3 and "- GPU: NVIDIA H200" in md
    assert "never pooled" in md


# 7 -------------------------------------------------------------------------------------------


def test_the_resume_hint_repeats_every_option():
    hint = resume_hint("bench/my spec.yaml", "--results-dir", "out", "--data-dir", "fashion-mnist=/d/f", "--data-dir", "/d/m",
                       "--no-download", "--force")
    assert hint == ("mnistbench run 'bench/my spec.yaml' --results-dir out --data-dir fashion-mnist=/d/f "
                    "--data-dir /d/m --no-download")


# 8 -------------------------------------------------------------------------------------------


class ExplodingNet(torch.nn.Module):
    """Raises during its second epoch."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.training and self.calls > 6:  # 256 samples / batch 64 = 4 batches an epoch
            raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
        return self.fc(x.flatten(1))


@pytest.fixture
def exploding_model():
    with MODELS.registered("explodes-in-epoch-2", "test model: raises during its second epoch", ExplodingNet) as name:
        yield name


def test_a_cell_that_raises_is_recorded_failed_and_the_matrix_goes_on(data, tmp_path, exploding_model):
    spec = write_spec(tmp_path / "s.yaml", SPEC.replace("model: [mlp-matched]", f"model: [{exploding_model}, mlp-matched]"))
    result = CliRunner().invoke(app, ["run", str(spec), "--results-dir", str(tmp_path), "--data-dir", str(data)])
    assert result.exit_code == 3, result.output
    assert "2 cells failed" in result.output and "Traceback" not in result.output
    records = {r.cell: r for r in load_records(tmp_path / "integrity")}
    failed = records[f"{exploding_model}_seed-0"]
    assert failed.status == "failed" and failed.note == "RuntimeError: CUDA out of memory (simulated) second line"
    assert len(failed.epochs) == 1  # what it finished is kept
    assert records["mlp-matched_seed-1"].status == "finished"
    md = (tmp_path / "integrity" / "summary.md").read_text()
    assert "| 2 (2 failed)" in md and "Failed runs (the cell raised)" in md
    again = CliRunner().invoke(app, ["run", str(spec), "--results-dir", str(tmp_path), "--data-dir", str(data)])
    assert "2 cells run" in again.output  # failed cells are retried, finished ones skipped


# 9 -------------------------------------------------------------------------------------------


def test_run_files_are_strict_json_and_keep_non_finite_values(tmp_path):
    r = make_record("lenet5", 0, status="diverged")
    path = write_records(tmp_path / "demo", [r]) / "runs" / f"{r.cell}.json"

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    raw = json.loads(path.read_text(), parse_constant=refuse)
    assert raw["non_finite"] == {"epochs[4].train_loss": "nan", "epochs[4].test_loss": "nan"}
    assert raw["epochs"][4]["test_loss"] is None
    back = load_record(path)
    assert math.isnan(back.epochs[4].test_loss) and back.status == "diverged"


def test_run_files_of_version_0_1_with_bare_nan_still_load(tmp_path):
    r = make_record("lenet5", 0, status="diverged")
    raw = json.loads(r.to_json())
    raw.pop("non_finite"), raw.pop("key")
    raw["schema"] = 1
    raw["epochs"][4]["test_loss"] = raw["epochs"][4]["train_loss"] = math.nan
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.json").write_text(json.dumps(raw))  # Python writes bare NaN, as 0.1 did
    back = load_record(tmp_path / "runs" / "old.json")
    assert back.status == "diverged" and back.key == r.key


# 10 ------------------------------------------------------------------------------------------


def test_deterministic_cells_switch_deterministic_algorithms_on_for_the_cell_only(data):
    seen = []
    config = CellConfig(model="mlp-matched", device="cpu", epochs=1, batch_size=64, threads=1, deterministic=True)
    out = run_cell(config, load_dataset("mnist", data, allow_download=False),
                   on_epoch=lambda m, s: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
    assert out.determinism["deterministic_algorithms"] is True  # what the run record stores, as the cell ran


def test_each_run_records_what_exact_repetition_depends_on(clean):
    env = load_records(clean)[0].environment
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch"] == torch.__version__ and env["threads"] == 1
    assert {"onednn", "mkl", "cpu_flags", "host", "determinism"} <= set(env)
    assert env["determinism"]["deterministic_algorithms"] is False


def test_the_committed_cpu_results_keep_their_keys_and_count_as_done_only_on_their_machine_kind(real_data, tmp_path):
    """Records written before content hashing are still found by key on the same data; whether they are skipped
    depends on the machine (and thread count) they were measured with, as for any record (docs/results.md)."""
    root = Path(__file__).resolve().parent.parent
    spec = load_spec(root / "bench" / "cpu.yaml")
    shutil.copytree(root / "reference" / "cpu" / "runs", tmp_path / "cpu" / "runs")
    plan = plan_run(spec, tmp_path, real_data, allow_download=False, force=False)
    records = {r.key: r for r in load_records(plan.folder)}
    assert len(plan.tasks) == 9 and all(t.measurement.legacy_key in records for t in plan.tasks)
    for t in plan.tasks:
        record = records[t.measurement.legacy_key]
        here = t.measurement.machine.matches(record.machine) and record.environment["threads"] == t.threads
        assert t.measurement.holds(record) == here


# Property: whatever happens to a folder, its tables end as those of one clean run ------------

_OPS = st.lists(
    st.one_of(st.tuples(st.just("kill"), st.integers(1, 4)), st.tuples(st.sampled_from(["rerun", "force", "copy"]), st.just(0))),
    min_size=1, max_size=4,
)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_kills_reruns_forces_and_copied_files_end_in_the_tables_of_one_clean_run(ops, data, clean):
    spec = parse_spec(_yaml(SPEC), "integrity")
    with tempfile.TemporaryDirectory() as tmp, mock.patch("mnistbench.report.plots.write_plots", lambda folder, report: []):
        root = Path(tmp)
        folder = root / "integrity"
        for n, (op, at) in enumerate(ops):
            if op == "kill":  # a Ctrl-C at the at-th epoch of this invocation
                epochs = []

                def interrupt(event, epochs=epochs, at=at):
                    if event.kind == "epoch":
                        epochs.append(event)
                        if len(epochs) == at:
                            raise Interrupted(signal.SIGINT)

                try:
                    run_spec(spec, root, data, on_event=interrupt)
                except Interrupted:
                    pass
            elif op == "copy" and (folder / "runs").is_dir() and list((folder / "runs").glob("*.json")):
                first = sorted((folder / "runs").glob("*.json"))[0]
                shutil.copy(first, folder / "runs" / f"copied-{n}.json")
            else:
                run_spec(spec, root, data, force=op == "force")
        run_spec(spec, root, data)
        assert rows(folder) == rows(clean)
        assert check_report(folder) == []
