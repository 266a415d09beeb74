"""Distortions, the validation split and the paper's reference errors: batched, seeded, resumable, recorded honestly."""

import json
import math

import pytest
import torch

from conftest import make_dataset, write_spec
from mnistbench.data.augment import AffineRanges, DistortedBatches, distort, random_affine_matrices
from mnistbench.run.checkpoint import load_checkpoint, save_checkpoint
from mnistbench.data.datasets import TensorBatches, load_dataset
from mnistbench.train.engine import run_cell
from mnistbench.errors import MnistbenchError
from mnistbench.run.runner import run_spec
from mnistbench.spec.schema import CellConfig, load_spec, parse_spec
from mnistbench.report.tables import summary_markdown
from records_factory import make_record, report_of

NONE = AffineRanges(0, 0, 0, 0, 0)


def blob_image() -> torch.Tensor:
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:16, 12:17] = 1.0
    return x


def centroid(x: torch.Tensor) -> tuple[float, float]:
    w = x[0, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


def test_zero_ranges_leave_every_image_as_it_was():
    theta = random_affine_matrices(4, NONE, torch.Generator().manual_seed(0))
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(4, 2, 3))
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(distort(x, theta, -0.4), x, atol=1e-5)


def test_a_translation_moves_the_digit_by_that_many_pixels():
    ranges = AffineRanges(translate_px=3, scale=0, squeeze=0, shear_deg=0, rotate_deg=0)
    theta = random_affine_matrices(1, ranges, torch.Generator().manual_seed(3))
    tx, ty = -14 * float(theta[0, 0, 2]), -14 * float(theta[0, 1, 2])  # a pixel is 2/28 of grid_sample's span
    assert 0.1 < max(abs(tx), abs(ty)) <= 3
    before, after = centroid(blob_image()), centroid(distort(blob_image(), theta, 0.0))
    assert after[0] - before[0] == pytest.approx(tx, abs=1e-3) and after[1] - before[1] == pytest.approx(ty, abs=1e-3)


def test_each_image_draws_its_own_transform_within_the_ranges():
    ranges = AffineRanges(translate_px=2, scale=0.1, squeeze=0.2, shear_deg=15, rotate_deg=0)
    theta = random_affine_matrices(2000, ranges, torch.Generator().manual_seed(1)).double()
    inverse = torch.linalg.inv(theta[:, :, :2])  # the forward map of the content: R · shear · diag(sx, sy)
    sx, sy = inverse[:, 0, 0], inverse[:, 1, 1]
    shear = inverse[:, 0, 1] / sy
    assert torch.allclose(inverse[:, 1, 0], torch.zeros(2000, dtype=torch.float64), atol=1e-6)  # no rotation asked for
    s, q = torch.sqrt(sx * sy), torch.sqrt(sx / sy)
    assert 0.9 - 1e-6 <= s.min() and s.max() <= 1.1 + 1e-6 and 0.8 - 1e-6 <= q.min() and q.max() <= 1.2 + 1e-6
    assert shear.abs().max() <= math.tan(math.radians(15)) + 1e-6 and shear.abs().max() > math.tan(math.radians(14))
    assert len({tuple(t.flatten().tolist()) for t in theta[:50]}) == 50


def test_what_comes_from_outside_the_image_is_background():
    background = -0.1307 / 0.3081
    blank = torch.full((8, 1, 28, 28), background)
    theta = random_affine_matrices(8, AffineRanges(translate_px=5, scale=0.3, rotate_deg=30), torch.Generator().manual_seed(0))
    assert torch.allclose(distort(blank, theta, background), blank, atol=1e-5)


def test_distorted_batches_repeat_from_a_seed_and_continue_from_a_saved_state():
    x, y = torch.randn(64, 1, 28, 28), torch.arange(64) % 10

    def batches(seed):
        return DistortedBatches(TensorBatches(x, y, 16, seed), AffineRanges(), seed, 0.0, torch.device("cpu"))

    a, b = batches(5), batches(5)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    state = a.generator.get_state()
    first = [bx for bx, _ in a]
    b.generator.set_state(state)
    b.batches.generator.set_state(a.batches.generator.get_state())  # shuffling is restored separately, as the engine does
    assert not torch.equal(first[0], next(iter(batches(6)))[0])
    assert len(a) == 4 and a.num_samples == 64


@pytest.fixture
def tiny(tiny_data):
    return load_dataset("mnist", tiny_data, allow_download=False)


def cfg(**kw):
    base = dict(model="lenet5", device="cpu", epochs=2, batch_size=32, eval_batch_size=64, threads=1, distort=True)
    return CellConfig(**{**base, **kw})


def metrics(outcome):
    return [(e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy) for e in outcome.epochs]


def test_a_distorted_cell_repeats_exactly_and_resumes_from_its_checkpoint_to_the_same_metrics(tiny, tmp_path):
    saved = []

    def keep_first(m, state):
        if m.epoch == 1:
            save_checkpoint(tmp_path / "c.pt", "k", state())
            saved.append(m)

    whole = run_cell(cfg(), tiny, keep_first)
    assert metrics(whole) == metrics(run_cell(cfg(), tiny))
    assert metrics(whole) != metrics(run_cell(cfg(distort=False), tiny))
    resume, message = load_checkpoint(tmp_path / "c.pt", "k", 2)
    assert message == "" and resume.distort_generator is not None
    assert metrics(run_cell(cfg(), tiny, resume=resume)) == metrics(whole)


def test_the_validation_split_trains_on_the_rest_and_never_touches_the_test_set(tiny):
    out = run_cell(cfg(distort=False, validation=56, epochs=1), tiny)
    e = out.epochs[0]
    assert e.train_samples_per_s == pytest.approx(200 / e.train_seconds) and e.eval_samples_per_s == pytest.approx(56 / e.eval_seconds)
    tv = run_cell(cfg(distort=False, validation=56, epochs=1, loader="torchvision"), tiny)
    assert tv.epochs[0].eval_samples_per_s == pytest.approx(56 / tv.epochs[0].eval_seconds)


def test_a_hold_out_as_large_as_the_training_set_is_one_line_before_training(tmp_path):
    spec = load_spec(write_spec(tmp_path / "v.yaml", "model: mlp-matched\ndevice: cpu\nvalidation: 256\n"))
    with pytest.raises(MnistbenchError, match="validation: 256 samples held out of MNIST's 256 training samples leaves none"):
        run_spec(spec, tmp_path / "results", make_dataset(tmp_path / "data"), allow_download=False)


def test_distortion_and_validation_settings_are_checked_and_keyed():
    with pytest.raises(MnistbenchError, match="t: distort_scale: Input should be less than 1"):
        parse_spec({"model": "lenet5", "distort_scale": 1.5}, "t")
    with pytest.raises(MnistbenchError, match="t: validation: Input should be greater than or equal to 0"):
        parse_spec({"model": "lenet5", "validation": -1}, "t")
    with pytest.raises(MnistbenchError, match="t: model_sha256: unknown key"):
        parse_spec({"model": "lenet5", "model_sha256": "ab"}, "t")
    key = lambda **kw: CellConfig(model="lenet5", **kw).key(["x"])  # noqa: E731
    assert key(distort_translate=3.0) == key()  # ranges change nothing without distort
    assert key(distort=True, distort_translate=3.0) != key(distort=True) != key()
    assert key(validation=10_000) != key()


def test_the_paper_reference_follows_distortion_dataset_and_split(tmp_path):
    records = [make_record("lenet5", s, distort=d) for s in range(2) for d in (False, True)]
    records += [make_record("custom-mlp", 0, distort=True), make_record("custom-mlp", 0, distort=True, validation=100)]
    records += [make_record("lenet5", 0, spec="fm", dataset="fashion-mnist")]
    report = report_of(records, tmp_path)
    papers = {(g.model, g.config.get("distort"), g.config.get("validation"), g.context.dataset):
              g.paper_error_pct() for g in report.groups()}
    # Read back from the run files, settings left out are at their defaults (distort False, validation 0).
    assert papers == {("lenet5", False, 0, "mnist"): 0.95, ("lenet5", True, 0, "mnist"): 0.8,
                      ("custom-mlp", True, 0, "mnist"): 2.45, ("custom-mlp", True, 100, "mnist"): None,
                      ("lenet5", False, 0, "fashion-mnist"): None}
    text = summary_markdown(report)
    assert "**Validation split:** runs with `validation` hold out the last 100 training samples" in text
