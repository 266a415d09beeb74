"""Time to accuracy under three rules (fixed-budget, mlperf, first-crossing), and the recipe levers they judge."""

import dataclasses
import math

import pytest
import torch

from mnistbench.run.checkpoint import load_checkpoint, save_checkpoint
from mnistbench.data.datasets import load_dataset
from mnistbench.train.engine import build_scheduler, run_cell
from mnistbench.errors import MnistbenchError
from mnistbench.report.rules import FIXED_BUDGET_MIN_SEEDS, fixed_budget, first_crossing, mlperf, rule_figures
from mnistbench.spec.schema import CellConfig, parse_spec
from mnistbench.report.tables import summary_markdown
from records_factory import make_record, report_of


def timed(record, ttt=None, wall=None):
    return dataclasses.replace(record, time_to_target_s=ttt, wall_to_target_s=wall)


def seeds(n, finals, **config):
    return [make_record("lenet5", s, final_accuracy=finals[s % len(finals)], target_accuracy=0.99, **config) for s in range(n)]


# --- the rules, on synthetic records ---------------------------------------------------------------

def test_fixed_budget_is_met_only_when_every_seed_of_at_least_ten_ends_at_the_target():
    ok = seeds(10, [0.991, 0.992])
    figure = fixed_budget(ok, 0.99)
    assert figure.met and figure.seeds == "10/10"
    assert figure.seconds == pytest.approx(sum(e.train_seconds for e in ok[0].epochs), rel=0.02)  # total, not one epoch
    one_below = seeds(10, [0.991, 0.992, 0.9899, 0.995, 0.993, 0.994, 0.996, 0.991, 0.992, 0.993])
    assert fixed_budget(one_below, 0.99).verdict.startswith("not met: 1 of 10 seeds ended below 99.00%")
    few = fixed_budget(seeds(FIXED_BUDGET_MIN_SEEDS - 1, [0.995]), 0.99)
    assert not few.met and few.verdict == "too few seeds: 9 (the rule needs at least 10)" and few.seconds is not None


def test_fixed_budget_judges_the_final_epoch_not_the_best_one():
    # Every seed crosses the target in epoch 2, then ends below it: first-crossing is met, fixed-budget is not.
    records = [timed(make_record("lenet5", s, test_accuracy=[0.98, 0.9905, 0.9898], target_accuracy=0.99), 2.0, 2.5)
               for s in range(10)]
    assert not fixed_budget(records, 0.99).met
    assert first_crossing(records, 0.99).met and first_crossing(records, 0.99).seconds == 2.0
    assert mlperf(records, 0.99).met and mlperf(records, 0.99).seconds == 2.5


def test_diverged_failed_and_stopped_runs_never_pass_the_fixed_budget():
    diverged = seeds(9, [0.995]) + [make_record("lenet5", 9, status="diverged", target_accuracy=0.99)]
    assert fixed_budget(diverged, 0.99).verdict.startswith("not met: 1 of 10")
    stopped = seeds(10, [0.995], stop_at_target=True)
    figure = fixed_budget(stopped, 0.99)
    assert figure.seconds is None and figure.verdict.startswith("does not apply")


def test_mlperf_and_first_crossing_count_a_seed_that_never_got_there_as_slowest():
    records = [timed(r, t, w) for r, t, w in zip(seeds(3, [0.995]), [1.0, 2.0, None], [1.5, 2.5, None])]
    assert mlperf(records, 0.99).seconds == 2.5 and mlperf(records, 0.99).verdict == "not met: 1 of 3 seeds never reached 99.00%"
    assert first_crossing(records, 0.99).seconds == 2.0 and first_crossing(records, 0.99).seeds == "2/3"
    assert first_crossing([timed(r) for r in records[:2]], 0.99).seconds is None


def test_mlperf_says_not_recorded_for_run_files_written_before_the_wall_clock(tmp_path):
    old = [timed(r, 1.0, None) for r in seeds(3, [0.995])]
    figure = mlperf(old, 0.99)
    assert figure.seconds is None and figure.verdict.startswith("not recorded")
    assert "not recorded (older run files)" in summary_markdown(report_of(old, tmp_path))
    assert rule_figures([make_record("lenet5", 0)]) == {}  # no target: no rules


def test_the_report_shows_three_rules_and_the_ratio_of_each_recipe_to_the_fastest(tmp_path):
    fast = [timed(r, 0.8, 1.1) for r in seeds(10, [0.992], recipe="fast", epochs=2)]
    slow = [timed(r, 30.0, 40.0) for r in seeds(10, [0.991], recipe="slow", epochs=8, train_samples_per_s=[1000.0] * 8)]
    report = report_of(fast + slow, tmp_path)
    section = report.sections[0]
    assert [g.label for g in section.groups] == ["lenet5, fast", "lenet5, slow"]
    by_rule = {r["rule"]: r for r in section.ratios}
    assert set(by_rule) == {"fixed-budget", "mlperf", "first-crossing"}
    assert by_rule["mlperf"]["ratio"] == pytest.approx(40.0 / 1.1) and by_rule["mlperf"]["recipe"] == "lenet5, slow"
    fast_total = sum(e.train_seconds for e in fast[0].epochs)
    assert by_rule["fixed-budget"]["ratio"] == pytest.approx(8 * 60.0 / fast_total, rel=0.05)
    text = summary_markdown(report)
    assert "Time to accuracy under three rules" in text and "first-crossing s (optimistic)" in text
    assert "Time-to-target ratios (this run)" in text and f"{by_rule['mlperf']['ratio']:.2f}×" in text
    row = next(r for r in section.rows if r.model == "lenet5, fast")
    assert row.fixed_budget_verdict == "met" and row.mlperf_s_median == 1.1 and row.first_crossing_s_median == 0.8


def test_no_ratio_is_printed_for_a_rule_that_a_recipe_does_not_meet(tmp_path):
    fast = [timed(r, 0.8, 1.1) for r in seeds(5, [0.992], recipe="fast")]  # too few seeds for fixed-budget
    slow = [timed(r, 30.0, 40.0) for r in seeds(10, [0.991], recipe="slow")]
    rules = {r["rule"] for r in report_of(fast + slow, tmp_path).sections[0].ratios}
    assert rules == {"mlperf", "first-crossing"}


# --- the recipe levers and the two clocks, on the tiny synthetic IDX files ----------------------------

@pytest.fixture
def tiny(tiny_data):
    return load_dataset("mnist", tiny_data, allow_download=False)


def cfg(**kw):
    base = dict(model="lenet5", device="cpu", epochs=2, batch_size=32, eval_batch_size=64, threads=1)
    return CellConfig(**{**base, **kw})


def finals(outcome):
    return [(e.train_loss, e.test_loss, e.test_accuracy) for e in outcome.epochs]


def test_mlperf_wall_clock_includes_every_probe_and_evaluation(tiny):
    out = run_cell(cfg(target_accuracy=0.01, target_eval_every=2), tiny)  # met at the first probe
    assert out.epochs_to_target < 1 and out.wall_to_target_s > out.time_to_target_s > 0
    whole = run_cell(cfg(target_accuracy=0.01), tiny)  # met at the end of epoch 1
    e = whole.epochs[0]
    assert whole.wall_to_target_s >= e.train_seconds + e.eval_seconds and whole.wall_to_target_s <= e.wall_seconds
    assert all(x.wall_seconds >= x.train_seconds + x.eval_seconds for x in whole.epochs)


def test_stop_at_target_ends_the_run_at_the_first_epoch_that_meets_it(tiny):
    out = run_cell(cfg(epochs=5, target_accuracy=0.01, stop_at_target=True), tiny)
    assert len(out.epochs) == 1 and out.epochs_to_target == 1.0
    assert len(run_cell(cfg(epochs=3, target_accuracy=0.999999, stop_at_target=True), tiny).epochs) == 3


def test_label_smoothing_and_ema_change_training_and_the_ema_resumes_exactly(tiny, tmp_path):
    plain = run_cell(cfg(), tiny)
    assert finals(run_cell(cfg(label_smoothing=0.1), tiny)) != finals(plain)
    saved = []

    def keep_first(m, state):
        if m.epoch == 1:
            save_checkpoint(tmp_path / "c.pt", "k", state())
            saved.append(m)

    ema = run_cell(cfg(ema=0.9), tiny, keep_first)
    # The same weights are trained (train loss equal), but the average is evaluated (test figures differ).
    assert [e.train_loss for e in ema.epochs] == [e.train_loss for e in plain.epochs]
    assert [e.test_loss for e in ema.epochs] != [e.test_loss for e in plain.epochs]
    resume, message = load_checkpoint(tmp_path / "c.pt", "k", 2)
    assert message == "" and resume.ema is not None
    assert finals(run_cell(cfg(ema=0.9), tiny, resume=resume)) == finals(ema)
    with pytest.raises(Exception, match="weight average"):
        run_cell(cfg(), tiny, resume=resume)  # a checkpoint with an average does not fit a cell without one


def test_a_batch_size_ramp_grows_geometrically_and_the_schedule_counts_its_steps(tiny):
    config = cfg(epochs=3, batch_size=128, batch_size_start=32, schedule="onecycle", lr=0.01)
    assert [config.epoch_batch_size(e) for e in (1, 2, 3)] == [32, 64, 128]
    assert config.steps_per_epoch(256) == [8, 4, 2]
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.01)
    assert build_scheduler(config, opt, 256).total_steps == 14
    out = run_cell(config, tiny)
    assert len(out.epochs) == 3 and out.epochs[-1].lr < out.epochs[0].lr * 10
    assert cfg(batch_size_start=64, epochs=1).epoch_batch_size(1) == 32  # one epoch: no ramp


def test_the_warmup_fraction_moves_the_peak_of_the_one_cycle():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.01)
    sched = build_scheduler(cfg(schedule="onecycle", lr=0.01, epochs=1, warmup=0.1), opt, 100 * 32)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs.index(max(lrs)) in (9, 10)


def test_every_optimizer_implementation_learns_and_they_agree(tiny):
    # After one epoch on the synthetic digits: a random guess scores 10% with a test loss of ln 10 = 2.30.
    got = {impl: finals(run_cell(cfg(optimizer_impl=impl, epochs=1), tiny))[0] for impl in ("for-loop", "foreach", "fused")}
    for impl, (train_loss, test_loss, accuracy) in got.items():
        assert accuracy >= 0.3 and test_loss < math.log(10) and train_loss < math.log(10), impl
    # The three are one algorithm: the same losses and accuracy, up to rounding.
    assert list(got["foreach"]) == pytest.approx(got["for-loop"], rel=1e-4)
    assert list(got["fused"]) == pytest.approx(got["for-loop"], rel=1e-4)


@pytest.mark.parametrize("settings, words", [
    ({"batch_size_start": 32, "loader": "torchvision"}, "needs loader: tensor"),
    ({"batch_size_start": 32, "schedule": "step"}, "does not combine with schedule: step"),
    ({"optimizer": "adadelta", "optimizer_impl": "fused"}, "no fused Adadelta"),
    ({"stop_at_target": True}, "stop_at_target needs target_accuracy"),
    ({"stop_at_target": True, "target_accuracy": 0.9, "target_eval_every": 5}, "epoch ends only"),
    ({"recipe": "a b"}, "recipe"),
    ({"ema": 1.0}, "ema"),
])
def test_recipe_settings_that_do_not_fit_are_one_line_spec_errors(settings, words):
    with pytest.raises(MnistbenchError, match=words) as info:
        parse_spec({"model": "lenet5", **settings}, "t")
    assert "\n" not in str(info.value)


def test_a_recipe_that_stops_at_the_target_says_so_where_its_final_accuracy_is_shown(tmp_path):
    records = []
    for s in range(3):
        r = timed(make_record("examples-net", s, final_accuracy=0.9905, epochs=4 + s % 2, target_accuracy=0.99,
                              stop_at_target=True, recipe="peer"), 100.0, 120.0)
        r.config["epochs"] = 14
        records.append(r)
    text = summary_markdown(report_of(records, tmp_path))
    assert "4–5 of 14 (stopped at target)" in text and "not the end of a budget" in text
    assert "does not apply: the runs stop at the target" in text
