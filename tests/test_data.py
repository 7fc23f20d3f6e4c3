"""Datasets: uint8 tensors on the device, shuffled batches by indexing, the per-model scalings, clear offline errors."""

from pathlib import Path

import pytest
import torch

from genlib.data import (DatasetUnavailable, binarize, dataset_available, from_signed, load_dataset, to_signed,
                         to_unit)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_offline_digits_need_no_files(tmp_path):
    data = load_dataset("digits", root=tmp_path, download=False)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape[1:] == (1, 28, 28)
    assert data.x_train.shape[0] + data.x_test.shape[0] == 1797
    assert set(data.y_train.unique().tolist()) == set(range(10))
    # the digit sits in MNIST's 20x20 box: the 4-pixel border is empty
    assert data.x_train[:, :, :4].max() == 0 and data.x_train[:, :, :, -4:].max() == 0
    assert "scikit-learn" in data.source
    assert dataset_available("digits", tmp_path)


def test_missing_mnist_says_what_to_do(tmp_path):
    assert not dataset_available("mnist", tmp_path)
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("mnist", root=tmp_path, download=False)
    assert "digits" in str(e.value) and str(tmp_path.resolve()) in str(e.value)


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_dataset("cifar")


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="the shared MNIST copy is not beside the repo")
def test_mnist_from_disk():
    data = load_dataset("mnist", root=SHARED, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert int(data.y_train[0]) == 5 and int(data.y_test[0]) == 7


def test_batches_cover_an_epoch_without_repeats():
    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    batches = list(data.batches(100, generator=g))
    assert len(batches) == data.steps_per_epoch(100) == 15
    seen = torch.cat([b.flatten(1) for b in batches])
    assert seen.dtype == torch.uint8 and seen.shape[0] == 1500
    assert torch.unique(seen, dim=0).shape[0] == torch.unique(data.x_train.flatten(1), dim=0).shape[0]
    again = list(data.batches(100, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="larger than"):
        next(data.batches(5000, generator=g))


def test_scalings():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8)
    u = to_unit(x)
    assert torch.allclose(u, torch.tensor([0.0, 128 / 255, 1.0]))
    assert torch.allclose(to_signed(u), torch.tensor([-1.0, 2 * 128 / 255 - 1, 1.0]), atol=1e-6)
    assert torch.allclose(from_signed(to_signed(u)), u)
    assert torch.equal(binarize(u, "threshold"), torch.tensor([0.0, 1.0, 1.0]))
    p = torch.full((100_000,), 0.3)
    b = binarize(p, "stochastic", generator=torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0} and abs(b.mean().item() - 0.3) < 0.01
    with pytest.raises(ValueError):
        binarize(p, "sometimes")
