"""One group of a section in plain numbers: a line of ``summary.csv``, read by attribute (``groups.Group.row``).

The fields are the CSV's columns, in order; None is an empty cell. Columns marked ``measured`` say how fast,
how big or under what load the machine ran (not what was learned): two runs of one spec may differ in them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

_MEASURED = {"measured": True}


def _measured():
    return field(metadata=_MEASURED)


@dataclass(frozen=True)
class SummaryRow:
    model: str  # the group's label: the model's name and the settings that vary in the section
    parameters: int
    epochs: int | float  # trained: with max_steps the whole ones and the part of the last it cut (1.6)
    seeds: int
    diverged: int
    final_test_acc_mean: Optional[float]
    final_test_acc_std: Optional[float]
    final_test_acc_ci95_low: Optional[float]
    final_test_acc_ci95_high: Optional[float]
    best_test_acc_mean: Optional[float]
    best_test_acc_max: Optional[float]
    final_test_loss_mean: Optional[float]
    final_test_loss_std: Optional[float]
    final_test_error_pct: Optional[float]
    paper_test_error_pct: Optional[float]  # LeCun et al. (1998), for a model with a counterpart there
    train_samples_per_s_median: Optional[float] = _measured()
    train_samples_per_s_min: Optional[float] = _measured()
    train_samples_per_s_max: Optional[float] = _measured()
    throughput_flag: str = _measured()  # why the throughput is not clean (load.py); "" if it is
    eval_samples_per_s_median: Optional[float] = _measured()
    seconds_per_epoch_median: Optional[float] = _measured()
    target_accuracy: Optional[float]
    time_to_target_s_median: Optional[float] = _measured()
    epochs_to_target_median: Optional[float]
    target_reached: Optional[str]  # "2/3": seeds that reached the target, of those with one
    # The three rules of rules.py (RULES), each as median seconds, seeds meeting it ("10/10") and the verdict.
    fixed_budget_s_median: Optional[float] = _measured()
    fixed_budget_seeds: Optional[str]
    fixed_budget_verdict: Optional[str]
    mlperf_s_median: Optional[float] = _measured()
    mlperf_seeds: Optional[str]
    mlperf_verdict: Optional[str]
    first_crossing_s_median: Optional[float] = _measured()
    first_crossing_seeds: Optional[str]
    first_crossing_verdict: Optional[str]
    # Speed against the compute peak: medians over seeds of what each run stored (roofline.py).
    train_flops_per_sample: Optional[int]
    peak_gflops: Optional[float] = _measured()
    train_gflops: Optional[float] = _measured()
    train_fraction_of_peak: Optional[float] = _measured()
    eval_gflops: Optional[float] = _measured()
    eval_fraction_of_peak: Optional[float] = _measured()
    peak_memory_mib_max: Optional[float] = _measured()  # no column when no record measured it (older run files)
    failed: int
    spec: str
    dataset: str
    data_identity: str
    device: str
    hosts: Optional[int]

    def csv_cells(self) -> dict:
        """Column -> value; peak memory is left out where it was not measured, so older summaries stay as they were."""
        cells = dataclasses.asdict(self)
        if self.peak_memory_mib_max is None:
            del cells["peak_memory_mib_max"]
        return cells


MEASURED_COLUMNS = frozenset(f.name for f in dataclasses.fields(SummaryRow) if f.metadata.get("measured"))
