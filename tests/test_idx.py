"""The IDX reader (genlib.idx): MNIST's file format read without torchvision, raw and gzipped, damaged files refused
with their name and fault, and the shared MNIST copy read exactly as torchvision reads it."""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genlib.data import dataset_available, load_dataset
from genlib.idx import SPLITS, IdxError, find_split_files, parse_idx, read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding `a`, written from the format's definition."""
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write_split(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = False) -> dict[str, np.ndarray]:
    """Four small files in torchvision's names; returns what they hold."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in SPLITS.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_a_dataset_in_torchvisions_layout_loads_without_torchvision(tmp_path, gz):
    arrays = write_split(tmp_path / "MNIST" / "raw", gz=gz)
    assert dataset_available("mnist", tmp_path)
    data = load_dataset("mnist", root=tmp_path, download=False)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (5, 1, 28, 28)
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(arrays["x_train"]))
    assert torch.equal(data.y_test, torch.from_numpy(arrays["y_test"]).long()) and data.y_test.dtype == torch.int64
    assert "IDX files" in data.source


def test_a_missing_file_means_not_available(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_split(folder)
    (folder / SPLITS["y_test"]).unlink()
    assert find_split_files(folder) is None and not dataset_available("mnist", tmp_path)


@pytest.mark.parametrize("raw,fault", [
    (b"PK\x03\x04rest", "not an IDX file"),
    (bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + bytes(16), "type 0x0d"),
    (bytes([0, 0, 0x08, 2]) + (3).to_bytes(4, "big"), "truncated or empty IDX header"),
    (bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + bytes(7), "should hold 10 values"),
])
def test_damaged_files_are_refused_with_the_fault(raw, fault):
    with pytest.raises(IdxError, match=fault) as e:
        parse_idx(raw, "some/file")
    assert "some/file" in str(e.value)


def test_images_and_labels_that_disagree_are_refused(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_split(folder)
    (folder / SPLITS["y_train"]).write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # 4 labels for 5 images
    with pytest.raises(IdxError, match="disagree"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_read_idx_round_trips_any_shape(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert torch.equal(read_idx(tmp_path / "a.gz"), torch.from_numpy(a))


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="the shared MNIST copy is not beside the repo")
def test_shared_mnist_reads_as_torchvision_reads_it():
    torchvision = pytest.importorskip("torchvision")
    data = load_dataset("mnist", root=SHARED, download=False)
    for train, x, y in ((True, data.x_train, data.y_train), (False, data.x_test, data.y_test)):
        ref = torchvision.datasets.MNIST(str(SHARED), train=train, download=False)
        assert torch.equal(x[:, 0], ref.data) and torch.equal(y, ref.targets.long())


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="the shared MNIST copy is not beside the repo")
def test_loading_mnist_does_not_import_torchvision():
    code = ("import sys; from genlib.data import load_dataset; "
            f"load_dataset('mnist', root={str(SHARED)!r}, download=False); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
