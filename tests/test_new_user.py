"""What a new user met on a fresh clone (issue 21, "Smaller defects"): each story fails on the code before the fix."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from typer.testing import CliRunner

from conftest import write_spec
from mnistbench.cli import app, resume_command
from test_makefile import Host

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ---------------------------------------------------------------- the resume hint works where it is printed


def test_under_make_the_resume_hint_is_the_make_command_with_the_options_in_args(monkeypatch):
    monkeypatch.setenv("MNISTBENCH_INVOKED_AS", "make bench-cpu SPEC=bench/cpu.yaml")
    hint = resume_command(Path("bench/cpu.yaml"), Path("results"), ["/data/m nist"], True)
    assert hint == "make bench-cpu SPEC=bench/cpu.yaml ARGS=" + shlex.quote("--data-dir '/data/m nist' --no-download")
    assert shlex.split(shlex.split(hint)[-1].removeprefix("ARGS="))[1] == "/data/m nist"  # the shell gives it back
    assert resume_command(Path("bench/cpu.yaml"), Path("results"), [], False) == "make bench-cpu SPEC=bench/cpu.yaml"
    assert resume_command(Path("bench/cpu.yaml"), Path("elsewhere"), [], False) == \
        "make bench-cpu SPEC=bench/cpu.yaml ARGS='--results-dir elsewhere'"


def test_outside_the_venv_the_resume_hint_names_the_program_by_its_path(monkeypatch, tmp_path):
    program = tmp_path / "venv" / "bin" / "mnistbench"
    monkeypatch.setattr(sys, "argv", [str(program), "run"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))  # not on PATH, as after `make bench-smoke`
    monkeypatch.delenv("MNISTBENCH_INVOKED_AS", raising=False)
    assert resume_command(Path("s.yaml"), Path("results"), [], False) == f"{program} run s.yaml --results-dir results"


def test_make_bench_cpu_tells_mnistbench_how_it_was_invoked(tmp_path):
    host = Host(tmp_path)
    seen = tmp_path / "invoked-as"
    (host.venv / "bin" / "mnistbench").write_text(f'#!/usr/bin/env bash\nprintf "%s" "$MNISTBENCH_INVOKED_AS" > {seen}\n')
    assert host.make("bench-cpu", "SPEC=bench/smoke.yaml").returncode == 0
    assert seen.read_text() == "make bench-cpu SPEC=bench/smoke.yaml"


# ---------------------------------------------------------------- validate: every problem at once


def test_validate_names_every_problem_of_a_spec_at_once_each_on_its_own_line(tmp_path):
    bad = write_spec(tmp_path / "typos.yaml", "modle: lenet5\nepochs: -1\nlr: fast\nmatrix:\n  seeds: [0, 1]\n")
    also_bad = write_spec(tmp_path / "other.yaml", "model: lenet5\nbatch_size: 0\n")
    result = cli("validate", bad, also_bad)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith("mnistbench: error: ") for line in lines), lines
    assert [line.split(": ")[3] for line in lines] == ["matrix.seeds", "modle", "epochs", "lr", "batch_size"], lines
    assert "did you mean seed?" in lines[0] and "did you mean model?" in lines[1]


def test_one_problem_is_still_one_line(tmp_path):
    result = cli("validate", write_spec(tmp_path / "one.yaml", "model: lenet5\nepochs: 0\n"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "epochs" in result.stderr


# ---------------------------------------------------------------- help text


def test_help_shows_the_ray_extra_and_no_bool_label_on_flags():
    run_help, top_help = cli("run", "--help").stdout, cli("--help").stdout
    assert "pip install 'mnistbench[ray]'" in run_help
    assert "<bool>" not in run_help and "<bool>" not in top_help
    assert "--version" in top_help and "--max-retries" in run_help


# ---------------------------------------------------------------- learning-curve bands respect the scale


def test_learning_curve_bands_stay_inside_what_the_axes_can_show(tmp_path):
    from records_factory import make_record, write_records
    from mnistbench.groups import build_report
    from mnistbench.plots import _learning_curves

    losses = [[3.0, 0.1, 0.01], [3.0, 0.1, 0.02], [3.2, 0.2, 0.3]]  # a symmetric interval at epoch 3 runs below 0
    accuracy = [[0.90, 0.97, 0.99], [0.90, 0.97, 0.999], [0.85, 0.93, 0.95]]  # ... and above 100% here
    folder = write_records(tmp_path / "wide", [make_record("lenet5", s, test_accuracy=accuracy[s], test_loss=losses[s])
                                               for s in range(3)])
    fig = _learning_curves("wide", "", build_report(folder).sections[0].groups)
    ax_acc, _, ax_loss = fig.axes[:3]
    band = lambda ax: [y for c in ax.collections for p in c.get_paths() for _, y in p.vertices]  # noqa: E731
    assert ax_loss.get_yscale() == "log" and band(ax_loss) and min(band(ax_loss)) > 0
    assert band(ax_acc) and max(band(ax_acc)) <= 100.0
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("clipped to accuracy ≤ 100%" in t for t in legend), legend
    assert "geometric mean" in ax_loss.get_ylabel()
