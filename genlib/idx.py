"""A reader of IDX files, the format of LeCun, Cortes & Burges' MNIST and of Xiao et al.'s Fashion-MNIST, raw or
gzipped, into uint8 tensors: the four files of a dataset in torchvision's layout, without importing torchvision.

Why not torchvision: importing it took 2 s of a training job's start on the 2-core course machine, and reading
MNIST's four files takes 0.1 s. torchvision stays the way to download them (genlib.data falls back to it).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the values in C order; MNIST's are unsigned bytes (type code 0x08).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one the MNIST family uses
SPLITS = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
          "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


class IdxError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes; the message names the file and the fault."""


def parse_idx(raw: bytes, where: str = "IDX data") -> torch.Tensor:
    """The uint8 array (its own copy, shaped by the header) held in the bytes of an IDX file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxError(f"{where} is not an IDX file (it does not start with two zero bytes)")
    if raw[2] != UBYTE:
        raise IdxError(f"{where} holds IDX type 0x{raw[2]:02x}; only unsigned bytes (0x08, MNIST's) are read")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IdxError(f"{where} has a truncated or empty IDX header ({ndim} dimensions)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise IdxError(f"{where} should hold {count:,} values for shape {tuple(dims)} but holds "
                       f"{len(raw) - header:,} bytes after its header: the file is truncated or damaged")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file, gzipped when its name ends in .gz, as a uint8 tensor."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return parse_idx(f.read(), str(path))


def find_split_files(folder: Path) -> dict[str, Path] | None:
    """{x_train, y_train, x_test, y_test: path} of the four files in `folder` (each raw or .gz), or None if any is
    missing."""
    found = {}
    for key, stem in SPLITS.items():
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()), None)
        if path is None:
            return None
        found[key] = path
    return found


def read_splits(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """The four files as tensors: images (N, 1, H, W) uint8 and labels (N,) int64, checked against each other."""
    x_train, y_train = read_idx(files["x_train"]), read_idx(files["y_train"])
    x_test, y_test = read_idx(files["x_test"]), read_idx(files["y_test"])
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise IdxError(f"the {split} files in {files['x_train'].parent} disagree: images of shape "
                           f"{tuple(x.shape)} against labels of shape {tuple(y.shape)}")
    return {"x_train": x_train.unsqueeze(1).contiguous(), "y_train": y_train.long(),
            "x_test": x_test.unsqueeze(1).contiguous(), "y_test": y_test.long()}
