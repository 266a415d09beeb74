"""`mnistbench compare A B`: hand-made run files with known answers, checked against scipy computed here."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from records_factory import DATA, ENVIRONMENT, make_record, write_records
from scipy import stats as st
from typer.testing import CliRunner

from mnistbench.cli import app
from mnistbench.report.compare import check, compare_folders, parse_check
from mnistbench.errors import MnistbenchError
from mnistbench.results import data_identity

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

# Final test accuracy and loss per seed, and training samples/s per epoch (epoch 1 is warm-up, left out).
A_ACC, B_ACC = [0.989, 0.990, 0.991], [0.985, 0.987, 0.988]
A_LOSS, B_LOSS = [0.040, 0.042, 0.038], [0.045, 0.050, 0.047]
A_SPEED = [[600.0, 2000.0, 2200.0], [600.0, 1900.0, 2100.0], [600.0, 2050.0, 2150.0]]
B_SPEED = [[600.0, 1500.0, 1700.0], [600.0, 1600.0, 1800.0], [600.0, 1650.0, 1550.0]]


def folder(path: Path, acc, loss, speed, model="lenet5", **kwargs) -> Path:
    records = [make_record(model, s, acc[s], loss[s], len(speed[s]), train_samples_per_s=speed[s], **kwargs)
               for s in range(len(acc))]
    return write_records(path, records)


@pytest.fixture
def before_after(tmp_path):
    a = folder(tmp_path / "a", A_ACC, A_LOSS, A_SPEED, spec="before")
    b = folder(tmp_path / "b", B_ACC, B_LOSS, B_SPEED, spec="after")
    return a, b


def cli(*args):
    return runner.invoke(app, ["compare", *map(str, args)])


def python_m(*args):
    return subprocess.run([sys.executable, "-m", "mnistbench", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_accuracy_and_loss_differences_are_b_minus_a_with_welchs_interval_and_p_value(before_after):
    [m] = compare_folders(*before_after).matches
    for got, a, b in ((m.accuracy, A_ACC, B_ACC), (m.loss, A_LOSS, B_LOSS)):
        expected = st.ttest_ind(b, a, equal_var=False)  # Welch's test of mean(B) - mean(A), done by scipy
        ci = expected.confidence_interval(0.95)
        assert got.difference == pytest.approx(statistics.fmean(b) - statistics.fmean(a), abs=1e-15)
        assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
        assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert got.dof == pytest.approx(expected.df, rel=1e-12)
    assert 100 * m.accuracy.difference == pytest.approx(-1 / 3)  # B is a third of a point less accurate
    assert m.loss.difference == pytest.approx(0.0073333333333)  # and its loss higher


def test_throughput_ratio_is_the_ratio_of_medians_with_the_range_of_epoch_ratios(before_after):
    [m] = compare_folders(*before_after).matches
    # Steady epochs: A 1900..2200, median (2050 + 2100) / 2; B 1500..1800, median (1600 + 1650) / 2.
    assert (m.a.row.train_samples_per_s_median, m.b.row.train_samples_per_s_median) == (2075.0, 1625.0)
    assert m.throughput.ratio == 1625.0 / 2075.0
    assert (m.throughput.low, m.throughput.high) == (1500.0 / 2200.0, 1800.0 / 1900.0)


def test_markdown_shows_the_numbers_in_points_with_the_sign_convention(before_after):
    result = cli(*before_after)
    assert result.exit_code == 0, result.output
    expected = st.ttest_ind(B_ACC, A_ACC, equal_var=False)
    ci = expected.confidence_interval(0.95)
    row = next(line for line in result.stdout.splitlines() if line.startswith("| lenet5") and "99.00" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["lenet5", "3 / 3", "99.00", "98.67", "-0.33", f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]",
                     f"{expected.pvalue:.3g}"]
    assert f"| {1625 / 2075:.3f}× " in result.stdout and f"[{1500 / 2200:.3f}–{1800 / 1900:.3f}]" in result.stdout
    assert "Every difference is B − A (after − before)" in result.stdout
    assert "1 configuration in both folders, 0 only in A, 0 only in B" in result.stdout


@pytest.mark.parametrize("checks, code", [
    (["accuracy<-0.2"], 1),  # B is 0.33 points below A
    (["accuracy<-0.5"], 0),
    (["loss>0.005"], 1),  # B's loss is 0.0073 higher
    (["loss>0.01"], 0),
    (["throughput<0.9"], 1),  # B trains at 0.78x A's speed
    (["throughput<0.7"], 0),
    (["accuracy<-0.5", "loss>0.01", "throughput<0.7"], 0),
    (["accuracy<-0.5", "loss>0.01", "throughput<0.8"], 1),  # one failing check is enough
    (["accuracy>0"], 0),  # the direction is the user's: here "fail if B got more accurate"
])
def test_fail_on_exits_1_on_a_regression_and_0_otherwise(before_after, checks, code):
    result = cli(*before_after, *[x for c in checks for x in ("--fail-on", c)])
    assert result.exit_code == code, result.output
    regressions = [line for line in result.stderr.splitlines() if line.startswith("mnistbench: regression: ")]
    assert len(regressions) == code  # one line per failed check and configuration, nothing when all pass


def test_fail_on_names_the_configuration_and_the_value(before_after):
    result = cli(*before_after, "--fail-on", "accuracy<-0.2")
    assert result.exit_code == 1
    assert result.stderr == "mnistbench: regression: lenet5: accuracy B − A = -0.3333 points < -0.2\n"
    assert "- `accuracy<-0.2`: **failed** (1 of 1 configuration failing)" in result.stdout


def test_a_difference_exactly_at_the_threshold_does_not_fail(tmp_path):
    # 100 × (0.988 − 0.990) is -0.20000000000000018 in floating point; "below -0.2" must not catch it.
    a = folder(tmp_path / "a", [0.990, 0.990], A_LOSS, A_SPEED)
    b = folder(tmp_path / "b", [0.988, 0.988], A_LOSS, A_SPEED)
    assert 100 * (statistics.fmean([0.988] * 2) - statistics.fmean([0.990] * 2)) < -0.2
    assert cli(a, b, "--fail-on", "accuracy<-0.2").exit_code == 0
    assert cli(a, b, "--fail-on", "accuracy<-0.19").exit_code == 1


@pytest.mark.parametrize("check", ["accuracy", "accuracy<", "accuracy<-0.2x", "speed<0.9", "accuracy=-0.2", "accuracy<=-0.2",
                                   "accuracy<nan", "throughput<inf", "<0.9", "accuracy<-0.2 loss>1", ""])
def test_a_malformed_fail_on_is_bad_input_exit_2_in_one_line(before_after, check):
    result = cli(*before_after, "--fail-on", check)
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mnistbench: error: --fail-on {check!r}: expected METRIC<NUMBER")


def test_parse_check_reads_metric_operator_and_threshold():
    assert parse_check("accuracy<-0.2").threshold == -0.2
    assert (parse_check(" throughput < 0.9 ").metric, parse_check("loss>1e-2").threshold) == ("throughput", 0.01)
    with pytest.raises(MnistbenchError):
        parse_check("Accuracy<1")


def test_groups_match_on_configuration_not_on_spec_device_or_data_and_both_sides_are_shown(tmp_path):
    gpu_env = {**ENVIRONMENT, "gpu": {"name": "NVIDIA H200"}}
    shas = ["cd" * 32] * 4
    other_data = {**DATA, "identity": data_identity(shas), "files": [{**f, "sha256": "cd" * 32} for f in DATA["files"]]}
    a = write_records(tmp_path / "a", [make_record(m, s, spec="cpu") for m in ("lenet5", "custom-mlp") for s in range(2)])
    b_records = [make_record(m, s, spec="gpu", device="cuda", environment=gpu_env) for m in ("lenet5", "mlp-matched")
                 for s in range(2)]
    for r in b_records:
        r.data = other_data
    b = write_records(tmp_path / "b", b_records)
    c = compare_folders(a, b)
    assert [m.label for m in c.matches] == ["lenet5"]
    assert [u.label for u in c.only_a] == ["custom-mlp"] and [u.label for u in c.only_b] == ["mlp-matched"]
    assert c.only_a[0].closest is None  # B has no custom-mlp at all
    m = c.matches[0]
    assert (m.a.group.context.device, m.b.group.context.device) == ("cpu: Test CPU 9000 (4 CPUs)", "cuda: NVIDIA H200")
    out = cli(a, b).stdout
    assert "**Different devices:** A cpu: Test CPU 9000 (4 CPUs), B cuda: NVIDIA H200." in out
    assert f"**Different data files:** A data {DATA['identity'][:8]}, B data {other_data['identity'][:8]}." in out
    assert "## Only in A (not compared)\n\n- custom-mlp (2 seeds; cpu · data" in out
    assert "## Only in B (not compared)\n\n- mlp-matched (2 seeds; gpu · data" in out


def test_a_setting_that_differs_keeps_groups_apart_and_the_closest_one_is_named(tmp_path):
    a = write_records(tmp_path / "a", [make_record("lenet5", s, epochs=3) for s in range(2)])
    b = write_records(tmp_path / "b", [make_record("lenet5", s, epochs=5) for s in range(2)])
    c = compare_folders(a, b)
    assert c.matches == [] and [u.label for u in c.only_a] == ["lenet5, epochs=3"]
    assert c.only_a[0].closest == {"epochs": (3, 5)} and c.only_b[0].closest == {"epochs": (3, 5)}
    assert "closest in B: epochs 3 → 5" in cli(a, b).stdout


def test_fail_on_fails_closed_when_it_can_check_nothing(tmp_path):
    a = write_records(tmp_path / "a", [make_record("lenet5", s, epochs=3) for s in range(2)])
    b = write_records(tmp_path / "b", [make_record("lenet5", s, epochs=5) for s in range(2)])
    result = cli(a, b, "--fail-on", "throughput<0.9")
    assert result.exit_code == 1
    assert result.stderr == "mnistbench: regression: throughput<0.9 checked nothing: no configuration is in both folders\n"
    assert cli(a, b).exit_code == 0  # without a check, listing no common configuration is no failure


def test_fail_on_fails_closed_when_b_has_no_finished_run(tmp_path):
    a = write_records(tmp_path / "a", [make_record("lenet5", s) for s in range(2)])
    b = write_records(tmp_path / "b", [make_record("lenet5", s, status="diverged") for s in range(2)])
    [m] = compare_folders(a, b).matches
    assert m.accuracy is None and m.loss is None
    result = cli(a, b, "--fail-on", "accuracy<-1")
    assert result.exit_code == 1
    assert "lenet5: accuracy<-1 cannot be checked: no finished (not diverged, not failed) run in B" in result.stderr


def test_one_seed_a_side_gives_the_difference_without_interval_or_p_value(tmp_path):
    a = folder(tmp_path / "a", [0.99], [0.03], [[600.0, 2000.0]])
    b = folder(tmp_path / "b", [0.98], [0.04], [[600.0, 1000.0]])
    [m] = compare_folders(a, b).matches
    assert m.accuracy.difference == pytest.approx(-0.01) and math.isnan(m.accuracy.ci_low) and math.isnan(m.accuracy.p_value)
    assert (m.throughput.ratio, m.throughput.low, m.throughput.high) == (0.5, 0.5, 0.5)
    doc = json.loads(cli(a, b, "--json").stdout)
    assert doc["matched"][0]["accuracy"] == {"difference": pytest.approx(-0.01), "ci95_low": None, "ci95_high": None,
                                             "p_value": None, "dof": None}


def test_one_group_against_two_sections_is_compared_with_each(tmp_path):
    gpu_env = {**ENVIRONMENT, "gpu": {"name": "NVIDIA H200"}}
    a = write_records(tmp_path / "a", [make_record("lenet5", s) for s in range(2)])
    on_gpu = [make_record("lenet5", s, device="cuda", environment=gpu_env) for s in range(2)]
    for r in on_gpu:
        r.cell += "_cuda"  # one folder, two devices: the files need their own names
    b = write_records(tmp_path / "b", [make_record("lenet5", s) for s in range(2)] + on_gpu)
    c = compare_folders(a, b)
    assert sorted(m.b.group.context.device for m in c.matches) == ["cpu: Test CPU 9000 (4 CPUs)", "cuda: NVIDIA H200"]
    assert sorted(m.label for m in c.matches) == ["lenet5 [B cpu: Test CPU 9000 (4 CPUs)]", "lenet5 [B cuda: NVIDIA H200]"]
    assert "## Where each side ran" in cli(a, b).stdout
    # Two sections on both sides: each is compared with its own kind only.
    both = compare_folders(b, b)
    assert sorted((m.a.group.context.device, m.b.group.context.device) for m in both.matches) == [
        ("cpu: Test CPU 9000 (4 CPUs)", "cpu: Test CPU 9000 (4 CPUs)"), ("cuda: NVIDIA H200", "cuda: NVIDIA H200")]
    assert both.only_a == both.only_b == []


def test_the_committed_options_cpu_folder_against_itself_shows_no_difference():
    proc = python_m("compare", "reference/options-cpu", "reference/options-cpu", "--json",
                    "--fail-on", "accuracy<0", "--fail-on", "loss>0", "--fail-on", "throughput<1", "--fail-on", "throughput>1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert len(doc["matched"]) == 14 and doc["only_in_a"] == doc["only_in_b"] == [] and doc["regressions"] == 0
    for m in doc["matched"]:
        assert m["accuracy"]["difference"] == 0.0 and m["loss"]["difference"] == 0.0
        assert m["accuracy"]["p_value"] == 1.0 and m["loss"]["p_value"] == 1.0
        assert m["accuracy"]["ci95_low"] == -m["accuracy"]["ci95_high"] < 0  # an interval around 0, as wide as the seeds
        assert m["throughput"]["ratio"] == 1.0 and m["throughput"]["low"] < 1 < m["throughput"]["high"]
        assert m["a"] == m["b"]
    assert len(doc["checks"]) == 4 * 14 and not any(c["failed"] for c in doc["checks"])


def test_json_is_the_only_thing_on_stdout_and_warnings_go_to_stderr(tmp_path):
    a = write_records(tmp_path / "a", [make_record("lenet5", s) for s in range(2)])
    b = write_records(tmp_path / "b", [make_record("lenet5", s) for s in range(2)])
    (b / "runs" / "copy.json").write_bytes((b / "runs" / "lenet5_seed-0.json").read_bytes())
    proc = python_m("compare", a, b, "--json", "--fail-on", "accuracy<-0.1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"a", "b", "convention", "matched", "only_in_a", "only_in_b", "checks", "regressions", "refused", "warnings"}
    assert doc["b"]["run_files"] == 3 and doc["matched"][0]["b"]["seeds"] == 2  # the copy is counted once
    [warning] = doc["warnings"]
    assert warning.startswith(f"B ({b}): copy.json repeats the configuration and seed of lenet5_seed-0.json")
    assert proc.stderr == f"mnistbench: warning: {warning}\n"


def test_a_folder_without_run_files_is_bad_input(tmp_path, before_after):
    result = cli(before_after[0], tmp_path / "nowhere")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mnistbench: error: no run files in ")


def test_check_applies_every_condition_to_every_configuration(before_after):
    c = compare_folders(*before_after)
    outcomes = check(c, [parse_check("accuracy<-0.2"), parse_check("throughput<0.5")])
    assert [(o.check.text, o.label, o.failed) for o in outcomes] == [("accuracy<-0.2", "lenet5", True),
                                                                     ("throughput<0.5", "lenet5", False)]
    assert outcomes[1].value == 1625.0 / 2075.0
    assert outcomes[1].message == "lenet5: throughput B / A = 0.7831 ≥ 0.5"


def test_compare_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mnistbench.cli import app\n"
        "r = CliRunner().invoke(app, ['compare', 'reference/cpu', 'reference/cpu', '--fail-on', 'accuracy<-0.2'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_folder_whose_runs_did_not_record_their_vector_units_is_not_given_the_other_folders(tmp_path):
    # 0.1's records say "AMD EPYC" but not AVX2 or AVX-512; another folder of the same CPU model that says AVX2 must
    # not lend them its vector units: two VMs of one CPU model differed up to 1.8x (reference/cpu vs cpu-avx2).
    old = write_records(tmp_path / "old", [make_record("lenet5", s) for s in range(2)])
    avx2 = {**ENVIRONMENT, "cpu_capability": "AVX2", "cpu_flags": ["avx2", "fma"]}
    new = write_records(tmp_path / "new", [make_record("lenet5", s, environment=avx2) for s in range(2)])
    c = compare_folders(old, new)
    device_a, device_b = c.report_a.sections[0].context.device, c.report_b.sections[0].context.device
    assert "AVX2" in device_b and "AVX" not in device_a, (device_a, device_b)
