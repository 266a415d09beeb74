"""Reading, verifying and serving the IDX files."""

import gzip
import hashlib

import numpy as np
import pytest
import torch

from conftest import make_dataset, synthetic_digits, write_idx
from mnistbench.data.datasets import (
    TensorBatches,
    dataset_info,
    load_dataset,
    normalize,
    read_idx,
    resolve_data_dir,
    torchvision_batches,
)
from mnistbench.errors import MnistbenchError


def test_gzip_and_raw_files_parse_to_the_same_arrays(tmp_path):
    gz = load_dataset("mnist", make_dataset(tmp_path / "gz", gz=True), allow_download=False)
    raw = load_dataset("mnist", make_dataset(tmp_path / "raw", gz=False), allow_download=False)
    assert torch.equal(gz.train.images, raw.train.images) and torch.equal(gz.test.labels, raw.test.labels)
    assert gz.train.images.shape == (256, 28, 28) and gz.train.images.dtype == torch.uint8
    assert len(gz.test) == 128


def test_every_file_is_hashed_and_a_non_official_file_is_flagged(tiny_data):
    ds = load_dataset("mnist", tiny_data, allow_download=False)
    by_role = {f.role: f for f in ds.files}
    blob = (tiny_data / "train-images-idx3-ubyte.gz").read_bytes()
    assert by_role["train-images"].sha256 == hashlib.sha256(blob).hexdigest()
    assert by_role["train-images"].file == "train-images-idx3-ubyte.gz"  # a name, not a path
    assert all(f.official is False for f in ds.files) and not ds.official


def test_raw_files_cannot_be_vouched_for(tmp_path):
    ds = load_dataset("mnist", make_dataset(tmp_path / "raw", gz=False), allow_download=False)
    assert all(f.official is None for f in ds.files)


def test_real_files_are_recognised_as_official_except_the_restored_training_images(real_data):
    ds = load_dataset("mnist", real_data, allow_download=False)
    status = {f.role: f.official for f in ds.files}
    assert status == {"train-images": False, "train-labels": True, "test-images": True, "test-labels": True}
    assert len(ds.train) == 60_000 and len(ds.test) == 10_000


def test_data_dir_precedence_flag_then_env_then_cache(tmp_path, monkeypatch):
    info = dataset_info("mnist")
    monkeypatch.setenv("MNISTBENCH_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(info, tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(info) == tmp_path / "env"
    monkeypatch.delenv("MNISTBENCH_DATA_DIR")
    assert resolve_data_dir(info) == tmp_path / "cache" / "mnistbench" / "mnist"


def test_missing_files_offline_say_where_to_put_them(tmp_path):
    with pytest.raises(MnistbenchError, match=r"not found in .*empty.*MNISTBENCH_DATA_DIR"):
        load_dataset("mnist", (tmp_path / "empty").mkdir() or tmp_path / "empty", allow_download=False)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "wrong magic number"),
        (lambda b: b[:4], "truncated IDX header"),
        (lambda b: b + b"\x00" * 7, "trailing bytes"),
    ],
    ids=["truncated", "magic", "header", "trailing"],
)
def test_a_malformed_file_is_a_one_line_error_naming_the_file(tiny_data, corrupt, message):
    path = tiny_data / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt(gzip.decompress(path.read_bytes()))))
    with pytest.raises(MnistbenchError, match=message) as e:
        load_dataset("mnist", tiny_data, allow_download=False)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "\n" not in str(e.value)


def test_a_broken_gzip_stream_is_an_error_not_a_crash(tiny_data):
    path = tiny_data / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(MnistbenchError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tiny_data, allow_download=False)


def test_wrong_dimensions_and_bad_labels_are_rejected(tmp_path):
    folder = make_dataset(tmp_path / "d")
    x, _ = synthetic_digits(128, 1)
    write_idx(folder / "t10k-images-idx3-ubyte", x[:, :20, :20])
    with pytest.raises(MnistbenchError, match="wrong dimensions"):
        load_dataset("mnist", folder, allow_download=False)
    folder = make_dataset(tmp_path / "e")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(128, 12, dtype=np.uint8))
    with pytest.raises(MnistbenchError, match="label 12 outside 0-9"):
        load_dataset("mnist", folder, allow_download=False)
    folder = make_dataset(tmp_path / "f")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(100, dtype=np.uint8))
    with pytest.raises(MnistbenchError, match="128 images but .* 100 labels"):
        load_dataset("mnist", folder, allow_download=False)


def test_read_idx_roundtrips(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", arr, gz=False)), arr)


def test_tensor_batches_cover_the_split_once_in_a_seeded_order(tiny_data):
    ds = load_dataset("mnist", tiny_data, allow_download=False)
    x, y = normalize(ds.train, ds.info, torch.device("cpu"))
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32
    first = torch.cat([b for _, b in TensorBatches(x, y, 100, seed=3)])
    again = torch.cat([b for _, b in TensorBatches(x, y, 100, seed=3)])
    assert torch.equal(first, again) and not torch.equal(first, y)
    assert sorted(first.tolist()) == sorted(y.tolist()) and len(TensorBatches(x, y, 100, seed=3)) == 3


def test_shuffled_batches_are_the_rows_of_the_seeded_permutation_as_indexing_gives_them(tiny_data):
    """The batches are taken with index_select (faster); they stay the rows ``x[idx]`` gave, so results do not move."""
    ds = load_dataset("mnist", tiny_data, allow_download=False)
    x, y = normalize(ds.train, ds.info, torch.device("cpu"))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    for i, (xb, yb) in enumerate(TensorBatches(x, y, 100, seed=3)):
        idx = order[i * 100:(i + 1) * 100]
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx]) and xb.is_contiguous()


def test_the_torchvision_pipeline_yields_the_same_normalized_pixels(tiny_data):
    ds = load_dataset("mnist", tiny_data, allow_download=False)
    x, y = normalize(ds.test, ds.info, torch.device("cpu"))
    xb, yb = next(iter(torchvision_batches(ds.test, ds.info, 16, seed=None)))
    assert torch.allclose(xb, x[:16], atol=1e-6) and torch.equal(yb, y[:16])


def test_missing_files_are_downloaded_from_a_mirror_and_verified(tmp_path, monkeypatch):
    """A local HTTP server stands in for the MNIST mirrors; the real download code runs against it."""
    import functools
    import http.server
    import threading

    import torchvision.datasets as tvd

    served = make_dataset(tmp_path / "mirror")
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead = "http://127.0.0.1:9/nothing-here/"  # the first mirror fails, the second answers
        monkeypatch.setattr(tvd.MNIST, "mirrors", [dead, f"http://127.0.0.1:{server.server_port}/"])
        monkeypatch.setattr(tvd.MNIST, "resources", list(md5.items()))
        target = tmp_path / "cache"
        target.mkdir()
        ds = load_dataset("mnist", target, allow_download=True)
    finally:
        server.shutdown()
    assert sorted(p.name for p in target.iterdir()) == sorted(md5)  # no partial or staging files left
    assert len(ds.train) == 256 and all(f.official for f in ds.files)


def test_a_download_that_fails_everywhere_is_a_one_line_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(MnistbenchError, match=r"could not be downloaded \(offline\?\): put the four IDX files there"):
        load_dataset("mnist", (tmp_path / "cache").mkdir() or tmp_path / "cache", allow_download=True)
    assert list((tmp_path / "cache").iterdir()) == []
