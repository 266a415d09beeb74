"""Robustness from saved weights: corruptions keep shape, range and label and repeat from their seed; a shift moves
a digit's mass by the shift; PGD at ε = 0 is clean accuracy and falls with ε; a bad weights file is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from conftest import make_dataset, synthetic_digits
from records_factory import make_record
from mnistbench.cli import app
from mnistbench.layout import weights_file
from mnistbench.robust import AttackSettings, Settings, evaluate_folder, shift_sentence, write_summary
from mnistbench.robust.attacks import robust_accuracy
from mnistbench.robust.corruptions import CORRUPTIONS, corrupt
from mnistbench.robust.evaluate import Normalize
from mnistbench.robust.markdown import render
from mnistbench.robust.shifts import DIRECTIONS, shift_pixels
from mnistbench.models.factory import create_model
from mnistbench.weights import save_weights, weights_bytes

SMALL = Settings(shifts=(0, 3), angles=(-30, 0, 30), attacks=AttackSettings(epsilons=(0.1, 0.3), steps=2, subset=16),
                 batch=128)


@pytest.fixture(autouse=True)
def _one_thread():
    # Many tiny forward passes: one thread avoids thread hand-offs on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_run(runs, model: str, seed: int, **config) -> None:
    """A finished run of ``model`` whose saved weights are its seeded initialization (no training needed)."""
    torch.manual_seed(seed)
    record = make_record(model, seed, spec="tiny", **config)
    record.extra["weights"] = save_weights(record.file_in(runs), weights_bytes(create_model(model).state_dict()))
    record.save(runs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    data = make_dataset(root / "data", n_train=16, n_test=48)
    for model in ("lenet5", "mlp-matched"):
        for seed in (0, 1):
            write_run(root / "tiny" / "runs", model, seed)
    return root / "tiny", data


@pytest.fixture(scope="module")
def digits():
    images, labels = synthetic_digits(6, 3)
    return images.astype(np.float32), labels


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_keeps_shape_range_and_repeats_from_its_seed(name, digits):
    images, labels = digits
    before = images.copy()
    out = corrupt(images, name, seed=7)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255 and not np.isnan(out).any()
    assert np.array_equal(out, corrupt(images, name, seed=7))  # the same seed, the same images
    assert np.array_equal(images, before)  # the input (and so its label) is untouched
    assert not np.array_equal(out, images)  # it did something


def test_random_corruptions_change_with_the_seed(digits):
    images, _ = digits
    for name in ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "fog", "spatter", "dotted_line", "zigzag"):
        assert not np.array_equal(corrupt(images, name, 0), corrupt(images, name, 1)), name


@pytest.mark.parametrize("name", ["canny_edges", "scale", "stripe", "brightness"])
def test_a_fixed_corruption_of_a_batch_is_each_image_corrupted_alone(name, digits):
    # ndimage.sobel on the N x 28 x 28 batch once smoothed across neighbouring images: canny_edges mixed digits.
    images, _ = digits
    alone = np.concatenate([corrupt(images[i : i + 1], name, 0) for i in range(len(images))])
    assert np.allclose(corrupt(images, name, 0), alone, atol=1e-3)


def _centre_of_mass(img: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(img.shape)
    return np.array([(cols * img).sum(), (rows * img).sum()]) / img.sum()


@pytest.mark.parametrize("k", [1, 3, 6])
def test_shifting_a_digit_by_k_pixels_moves_its_centre_of_mass_by_k(k):
    img = np.zeros((28, 28), dtype=np.float32)
    img[9:19, 11:17] = 255  # a digit well inside the frame, so nothing leaves it at 6 px
    for name, (dx, dy) in DIRECTIONS.items():
        moved = shift_pixels(img, k * dx, k * dy)
        assert moved.sum() == img.sum(), name
        assert np.allclose(_centre_of_mass(moved) - _centre_of_mass(img), [k * dx, k * dy]), name


def _tiny_trained_model():
    torch.manual_seed(0)
    images, labels = synthetic_digits(256, 0)
    x, y = torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    model = torch.nn.Sequential(Normalize(0.1307, 0.3081), net)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x[:128], y[:128]


def test_pgd_at_zero_is_clean_accuracy_and_accuracy_falls_with_epsilon():
    pytest.importorskip("foolbox")  # the `robust` extra (in `dev`)
    torch.set_num_threads(1)
    model, x, y = _tiny_trained_model()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    eps = (0.0, 0.05, 0.1, 0.2, 0.3)
    found = robust_accuracy(model, x, y, AttackSettings(epsilons=eps, steps=5, subset=len(y)))
    pgd = [found["pgd"][f"{e:g}"] for e in eps]
    assert clean > 0.9 and pgd[0] == clean and found["fgsm"]["0"] == clean
    assert all(a >= b for a, b in zip(pgd, pgd[1:])) and pgd[-1] < clean


def test_a_folder_evaluates_twice_to_identical_tables(trained):
    folder, data = trained
    results = evaluate_folder(folder, SMALL, data)
    assert {r["model"] for r in results} == {"lenet5", "mlp-matched"} and len(results) == 4
    again = evaluate_folder(folder, SMALL, data, force=True)  # computed again, not reused
    assert again == results
    assert evaluate_folder(folder, SMALL, data) == results  # read back from robustness/per-run/, in the same order
    text = render("tiny", results)
    assert text == render("tiny", again)
    assert "PGD ε=0.3" in text and "mean corruption error" in text and "lenet5 − mlp-matched" in text
    assert "LeNet-5 keeps" in shift_sentence(results)
    from mnistbench.report.site.overview import discover  # the site finds the results folder, not the evaluation's own files

    assert discover(folder.parent, (folder.name,)) == [folder]


@pytest.mark.slow
def test_the_summary_writes_its_tables_and_figures(trained):
    folder, data = trained
    written = write_summary(folder, evaluate_folder(folder, SMALL, data))
    assert {p.name for p in written} >= {"summary.md", "summary.json", "translation.png", "adversarial.svg"}


def test_figures_from_other_settings_are_not_replaced_without_force(trained):
    folder, data = trained
    evaluate_folder(folder, SMALL, data)
    other = Settings(shifts=(0, 1), angles=(0,), attacks=None, batch=128)
    with pytest.raises(Exception, match="pass --force"):
        evaluate_folder(folder, other, data)


def test_a_missing_or_altered_weights_file_is_one_line_and_exit_2(trained, tmp_path):
    folder, data = trained
    copy = tmp_path / "copy"
    (copy / "runs").mkdir(parents=True)
    run = folder / "runs" / "lenet5_seed-0.json"
    (copy / "runs" / run.name).write_text(run.read_text())
    result = CliRunner().invoke(app, ["robust", str(copy), "--data-dir", str(data), "--no-attacks"])
    assert_one_line_error(result, "cannot read the weights")
    weights_file(copy / "runs" / run.name).write_bytes(b"not weights")
    result = CliRunner().invoke(app, ["robust", str(copy), "--data-dir", str(data), "--no-attacks"])
    assert_one_line_error(result, "not the weights its run saved")


def test_without_foolbox_the_attacks_are_reported_not_installed(monkeypatch, tmp_path):
    import mnistbench.robust.evaluate as ev

    monkeypatch.setattr(ev, "foolbox_version", lambda: None)
    write_run(tmp_path / "one" / "runs", "mlp-matched", 0)
    results = evaluate_folder(tmp_path / "one", SMALL, make_dataset(tmp_path / "data", n_train=16, n_test=16))
    assert results[0]["adversarial"]["status"].startswith("not installed")
    assert "not installed" in render("one", results)


@pytest.mark.slow
def test_clean_accuracy_from_the_saved_weights_is_the_runs_own_test_accuracy(tmp_path):
    from conftest import write_spec
    from mnistbench.run.runner import run_spec
    from mnistbench.spec.schema import load_spec

    data = make_dataset(tmp_path / "data", n_train=256, n_test=64)
    spec = "name: one\ndevice: cpu\nepochs: 1\nbatch_size: 64\nthreads: 1\nmatrix:\n  model: [lenet5]\n  seed: [0]\n"
    run_spec(load_spec(write_spec(tmp_path / "one.yaml", spec)), tmp_path / "results", data)
    (result,) = evaluate_folder(tmp_path / "results" / "one", Settings(shifts=(0,), angles=(0,), attacks=None), data)
    assert result["clean"] == pytest.approx(result["recorded_test_accuracy"], abs=1e-9)
    assert result["shifts"]["0"]["right"] == result["clean"] == result["rotations"]["0"]
