"""A user's runs land in git-ignored results/, the shipped ones in reference/; every run ends compared with the
reference of its spec (vs_reference.md/json); promote lets a complete folder join the reference on purpose only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from conftest import make_dataset, write_spec
from mnistbench.cli import app
from mnistbench.report.reference import VS_JSON, VS_MD, chosen_reference, default_reference

ROOT = Path(__file__).resolve().parent.parent
SPEC = """
name: tiny
dataset: mnist
device: cpu
epochs: 1
batch_size: 64
threads: 1
matrix:
  model: [mlp-matched]
  seed: [0, 1]
"""


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run of the tiny spec on synthetic data: (spec, data, its results folder)."""
    root = tmp_path_factory.mktemp("ref")
    data = make_dataset(root / "data")
    spec = write_spec(root / "tiny.yaml", SPEC)
    result = cli("run", spec, "--results-dir", root / "first", "--data-dir", data, "--no-reference")
    assert result.exit_code == 0, result.output
    return spec, data, root / "first" / "tiny"


@pytest.fixture
def checkout(trained, tmp_path, monkeypatch):
    """A working folder like a clone: reference/tiny shipped, results/tiny holding the same runs (so a run skips)."""
    spec, data, folder = trained
    shutil.copytree(folder, tmp_path / "reference" / "tiny")
    shutil.copytree(folder, tmp_path / "results" / "tiny")
    monkeypatch.chdir(tmp_path)
    return spec, data, tmp_path


def test_a_run_ends_side_by_side_with_the_reference_of_its_spec(checkout):
    spec, data, here = checkout
    result = cli("run", spec, "--data-dir", data)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Compared with the reference reference/tiny:" in out
    assert out.index("tables written to") < out.index("Compared with the reference") < out.index("2 skipped")
    machine = next(line for line in out.splitlines() if line.startswith("this machine: "))
    assert "; reference: " in machine and "threads" in machine
    assert "| mlp-matched" in out and "within noise?" in out
    doc = json.loads((here / "results" / "tiny" / VS_JSON).read_text())
    [row] = doc["configurations"]
    assert row["configuration"] == "mlp-matched" and row["seeds_here"] == row["seeds_reference"] == 2
    assert row["difference"] == 0.0 and row["ci_low"] < 0 < row["ci_high"] and row["within_noise"] is True
    assert row["throughput_ratio"] == 1.0 and doc["reference"] == "reference/tiny"
    assert doc["comparison"]["matched"][0]["a"]["seeds"] == 2  # the full `compare --json` document
    md = (here / "results" / "tiny" / VS_MD).read_text()
    assert "this machine: " in md and "## Full comparison" in md and "## Final test accuracy" in md


def test_by_default_a_run_is_compared_with_the_reference_of_its_own_kind_of_machine(checkout):
    spec, data, here = checkout
    shutil.copytree(here / "reference" / "tiny", here / "reference" / "tiny-this-kind")
    for path in (here / "reference" / "tiny" / "runs").glob("*.json"):  # the spec's own reference: another kind
        record = json.loads(path.read_text())
        record["environment"].update(cpu_capability="AVX512_TEST", cpu_flags=["avx512f"])
        path.write_text(json.dumps(record))
    result = cli("run", spec, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert "Compared with the reference reference/tiny-this-kind:" in result.output
    assert "(the same kind of machine)" in result.output
    given = cli("run", spec, "--data-dir", data, "--reference", "reference/tiny")  # asked for: that one
    assert "Compared with the reference reference/tiny:" in given.output and "(a different machine" in given.output


def test_the_comparison_is_on_the_page_so_the_folder_checks_clean_and_can_be_promoted(checkout):
    """The comparison is written before the report is built: the page shows it and the manifest records it."""
    spec, data, here = checkout
    assert cli("run", spec, "--data-dir", data).exit_code == 0
    folder = here / "results" / "tiny"
    check = cli("report", "--check", folder)
    assert check.exit_code == 0, check.output
    assert "Comparison with the reference" in (folder / "index.html").read_text()
    promoted = cli("promote", folder, "--to", here / "elsewhere", "--spec", spec)
    assert promoted.exit_code == 0, promoted.output


def test_no_reference_skips_the_comparison(checkout):
    spec, data, here = checkout
    result = cli("run", spec, "--data-dir", data, "--no-reference")
    assert result.exit_code == 0, result.output
    assert "Compared with the reference" not in result.output
    assert not (here / "results" / "tiny" / VS_MD).exists() and not (here / "results" / "tiny" / VS_JSON).exists()


def test_reference_dir_picks_another_reference_and_json_output_carries_the_comparison(checkout):
    spec, data, here = checkout
    (here / "reference").rename(here / "elsewhere")
    assert chosen_reference("tiny", spec, here / "elsewhere" / "tiny", False) == here / "elsewhere" / "tiny"
    assert chosen_reference("tiny", spec, None, False) is None  # no reference/tiny here any more
    result = CliRunner().invoke(app, ["run", str(spec), "--data-dir", str(data), "--reference", str(here / "elsewhere"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout stays one JSON document; the printed comparison goes to stderr
    assert doc["vs_reference"]["configurations"][0]["configuration"] == "mlp-matched"
    assert doc["vs_reference"]["reference"] == str(here / "elsewhere" / "tiny")
    assert f"Compared with the reference {here / 'elsewhere' / 'tiny'}:" in result.stderr


def test_a_reference_without_run_files_is_bad_input_before_any_training(trained, tmp_path):
    spec, data, _ = trained
    results = tmp_path / "results"
    assert_one_line_error(cli("run", spec, "--results-dir", results, "--data-dir", data, "--reference", tmp_path / "nope"),
                          "--reference")
    assert_one_line_error(cli("run", spec, "--results-dir", results, "--data-dir", data, "--reference", tmp_path,
                              "--no-reference"), "exclude each other")
    assert not results.exists()


def test_the_default_reference_is_found_beside_the_working_folder_or_above_the_spec(trained, tmp_path):
    _, _, folder = trained
    shutil.copytree(folder, tmp_path / "repo" / "reference" / "tiny")
    (tmp_path / "repo" / "bench").mkdir()
    spec = tmp_path / "repo" / "bench" / "tiny.yaml"
    assert default_reference("tiny", spec, cwd=tmp_path / "repo") == Path("reference/tiny")
    assert default_reference("tiny", spec, cwd=tmp_path) == tmp_path / "repo" / "reference" / "tiny"
    assert default_reference("other", spec, cwd=tmp_path) is None


# ---- promote ----------------------------------------------------------------------------------------------


def _promote(folder, to, *extra):
    return cli("promote", folder, "--to", to, *extra)


def test_promote_copies_a_complete_clean_folder_with_its_machine_and_never_replaces_unasked(trained, tmp_path):
    spec, _, folder = trained
    source = tmp_path / "results" / "tiny"
    shutil.copytree(folder, source)
    (source / "checkpoints").mkdir()
    (source / VS_MD).write_text("old comparison")
    result = _promote(source, tmp_path / "reference", "--spec", spec)
    assert result.exit_code == 0, result.output
    target = tmp_path / "reference" / "tiny"
    assert f"{target} created from {source}: 2 run files measured on " in result.output
    assert cli("report", target, "--check").exit_code == 0
    assert not (target / "checkpoints").exists() and not (target / VS_MD).exists()
    again = _promote(source, tmp_path / "reference", "--spec", spec)
    assert_one_line_error(again, "pass --replace")
    replaced = _promote(source, tmp_path / "reference", "--spec", spec, "--replace")
    assert replaced.exit_code == 0 and "replaced" in replaced.output
    assert [p.name for p in tmp_path.joinpath("reference").iterdir()] == ["tiny"]  # no staging left behind


@pytest.mark.parametrize("damage, words", [
    ("stale", "must pass first"),
    ("incomplete", "is incomplete: 1 of 2 cells"),
    ("no spec", "pass --spec FILE"),
])
def test_promote_refuses_a_folder_that_is_not_complete_and_clean_in_one_line(trained, tmp_path, damage, words):
    spec, _, folder = trained
    source = tmp_path / "results" / "tiny"
    shutil.copytree(folder, source)
    extra = [] if damage == "no spec" else ["--spec", spec]
    if damage == "stale":
        (source / "summary.md").write_text("edited by hand\n")
    elif damage == "incomplete":
        (source / "runs" / "mlp-matched_seed-1.json").unlink()
    assert_one_line_error(_promote(source, tmp_path / "reference", *extra), words)
    assert not (tmp_path / "reference").exists()


# ---- the checkout: shipped results tracked, the user's ignored --------------------------------------------


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs the git checkout")
def test_results_is_ignored_and_the_reference_is_tracked():
    assert _git("check-ignore", "-q", "results/cpu/runs/lenet5_seed-0.json").returncode == 0
    assert _git("check-ignore", "-q", "results/smoke/vs_reference.md").returncode == 0
    assert _git("check-ignore", "-q", "reference/cpu/runs/lenet5_seed-0.json").returncode == 1
    assert _git("ls-files", "results").stdout == ""
    tracked = _git("ls-files", "reference/cpu").stdout.split()
    assert "reference/cpu/summary.md" in tracked and "reference/cpu/runs/lenet5_seed-0.json" in tracked


# ---- make test-slow: the real data ------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_smoke_on_the_real_data_ends_compared_with_the_reference(real_data, tmp_path, monkeypatch):
    """`make bench-smoke`'s run into a fresh results root; with no committed reference/smoke, against its own promotion."""
    monkeypatch.chdir(ROOT)
    first = cli("run", "bench/smoke.yaml", "--results-dir", tmp_path / "results", "--data-dir", real_data, "--no-download")
    assert first.exit_code == 0, first.output
    shipped = ROOT / "reference" / "smoke"
    if not shipped.is_dir():  # the integrator may ship one; until then compare with this run, promoted
        assert "Compared with the reference" not in first.output
        assert _promote(tmp_path / "results" / "smoke", tmp_path / "reference").exit_code == 0
        shipped = tmp_path / "reference" / "smoke"
    again = cli("run", "bench/smoke.yaml", "--results-dir", tmp_path / "results", "--data-dir", real_data,
                "--no-download", "--reference", shipped)
    assert again.exit_code == 0 and "3 skipped" in again.output, again.output
    assert f"Compared with the reference {shipped}:" in again.output and "this machine: " in again.output
    rows = json.loads((tmp_path / "results" / "smoke" / VS_JSON).read_text())["configurations"]
    assert sorted(r["configuration"] for r in rows) == ["custom-mlp", "lenet5", "mlp-matched"]


# ---- the comparison itself, on made-up records ------------------------------------------------------------


def test_the_summary_names_both_machines_and_says_what_is_beyond_noise(tmp_path):
    from records_factory import DATA, ENVIRONMENT, make_record, write_records
    from mnistbench.report.reference import compare_with_reference, summary_text

    xeon = {**ENVIRONMENT, "cpu": "Intel Xeon", "threads": 4, "torch": "2.14.1+cpu"}
    ref = write_records(tmp_path / "reference" / "demo", [make_record("lenet5", s, 0.990 + 0.001 * s) for s in range(3)])
    here_records = [make_record("lenet5", s, 0.980 + 0.001 * s, environment=xeon,
                                train_samples_per_s=[10_000.0] * 5) for s in range(3)]
    for r in here_records:
        r.data = {**DATA, "identity": "ff" * 32}
    here = write_records(tmp_path / "results" / "demo", here_records)
    vs = compare_with_reference(here, ref)
    text = summary_text(vs)
    assert (f"this machine: cpu: Intel Xeon (4 CPUs), 4 threads, torch 2.14.1+cpu; reference: cpu: {ENVIRONMENT['cpu']} "
            f"(4 CPUs), {ENVIRONMENT['threads']} threads, torch {ENVIRONMENT['torch']} (a different machine or torch "
            "build") in text
    assert vs.same_kind is False
    [row] = vs.rows
    assert row.difference == pytest.approx(-1.0) and row.ci_high < 0 and row.within_noise is False
    assert "| no " in text and "Different data files (reference " in text
    assert row.throughput_ratio == pytest.approx(10_000.0 / vs.comparison.matches[0].a.row.train_samples_per_s_median)


AVX2 = {"cpu_capability": "AVX2", "cpu_flags": ["avx", "avx2", "fma"]}


def _folder(tmp_path, where: str, environment: dict, spec: str = "demo"):
    from records_factory import ENVIRONMENT, make_record, write_records

    records = [make_record("lenet5", s, 0.990 + 0.001 * s, spec=spec, environment={**ENVIRONMENT, **environment})
               for s in range(2)]
    return write_records(tmp_path / where, records)


@pytest.mark.parametrize("reference_env, verdict, words", [
    (AVX2, True, "(the same kind of machine)"),
    ({}, None, "(maybe another kind of machine: the reference's records do not say all that decides its speed"),
    ({"cpu_capability": "AVX512", "cpu_flags": ["avx", "avx2", "avx512f"]}, False, "(a different machine"),
])
def test_the_same_kind_of_machine_is_said_only_when_both_records_say_so(tmp_path, reference_env, verdict, words):
    """A reference written before the CPU's vector units were recorded is not called the same kind of machine."""
    from mnistbench.report.reference import compare_with_reference, summary_text

    here = _folder(tmp_path, "results/demo", AVX2)
    vs = compare_with_reference(here, _folder(tmp_path, "reference/demo", reference_env))
    assert vs.same_kind is verdict and words in summary_text(vs)
    assert "this machine: cpu: Test CPU 9000 (4 CPUs, AVX2), 2 threads" in summary_text(vs)


def test_the_default_reference_is_the_one_measured_on_this_kind_of_machine(tmp_path):
    from mnistbench.report.reference import matching_reference

    default = _folder(tmp_path, "reference/demo", {"cpu_capability": "AVX512", "cpu_flags": ["avx512f"]})
    _folder(tmp_path, "reference/demo-other-spec", AVX2, spec="other")  # this machine, but another spec
    avx2 = _folder(tmp_path, "reference/demo-avx2", AVX2)
    here = _folder(tmp_path, "results/demo", AVX2)
    assert matching_reference(default, here) == avx2
    elsewhere = _folder(tmp_path, "results2/demo", {"cpu_capability": "AVX512_VNNI", "cpu_flags": ["avx512f"]})
    assert matching_reference(default, elsewhere) == default  # none of this kind: the spec's own reference
    unknown = _folder(tmp_path, "results3/demo", {})
    assert matching_reference(default, unknown) == default  # this run's kind not fully known: no guess
