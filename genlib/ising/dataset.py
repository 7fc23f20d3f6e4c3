"""The `ising` dataset: Monte Carlo spin configurations of the 2-D Ising model as uint8 images (up = 255, down = 0),
generated on first use by genlib.ising.monte_carlo and cached on disk per (L, T, n, seed), as Torlai & Melko (PRB 94, 165134,
2016) train their RBMs on.

A dataset name carries its options after a colon: "ising" (L = 8 at T_c), "ising:L=8,T=2.5,n=10000,seed=0", or several
temperatures "ising:L=8,T=1.5/2.0/2.5" (their configurations pooled; the label is the temperature's index).
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from genlib.config import check, check_int, is_int, is_number
from genlib.runs.io import atomic_write_bytes, atomic_write_json, read_json
from genlib.ising.monte_carlo import IsingConfig, SamplingReport, sample_temperature
from genlib.ising.observables import T_C

NAME = "ising"
TEST_FRACTION = 10  # one extra configuration in ten is generated for the test split
CACHE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class IsingDataOptions:
    """The options a dataset name can carry; L 4..64 even, n per temperature, one or more temperatures."""

    L: int = 8
    temperatures: tuple[float, ...] = (round(T_C, 5),)
    n: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        check(is_int(self.L) and self.L % 2 == 0 and 4 <= self.L <= 64,
              f"ising: L must be an even number from 4 to 64, got {self.L!r}")
        check_int("ising: n (configurations per temperature)", self.n, 10, 1_000_000)
        check(isinstance(self.temperatures, tuple) and len(self.temperatures) > 0
              and all(is_number(t) and 0.05 <= t <= 100 for t in self.temperatures),
              f"ising: temperatures must be numbers in [0.05, 100], got {self.temperatures!r}")
        check_int("ising: seed", self.seed, 0)
        # temperatures as the name writes them (5 significant digits): the name, the cache file and the sampled T agree
        object.__setattr__(self, "temperatures", tuple(float(format_temperature(float(t))) for t in self.temperatures))

    @property
    def name(self) -> str:
        """The canonical dataset name: parse(name).name == name, and the cache key of each temperature."""
        temps = "/".join(format_temperature(t) for t in self.temperatures)
        return f"{NAME}:L={self.L},T={temps},n={self.n},seed={self.seed}"


def format_temperature(T: float) -> str:
    return f"{T:.5g}"


def temperature_grid(lo: float, hi: float, count: int) -> tuple[float, ...]:
    """`count` evenly spaced temperatures from lo to hi, rounded as dataset names write them."""
    if count < 1 or hi < lo:
        raise ValueError(f"need count >= 1 and hi >= lo, got {lo}..{hi} x {count}")
    if count == 1:
        return (float(format_temperature(lo)),)
    return tuple(float(format_temperature(lo + (hi - lo) * i / (count - 1))) for i in range(count))


def parse(options: str) -> IsingDataOptions:
    """'L=8,T=2.5/3,n=1000,seed=0' (any subset, any order; '' for the defaults) -> IsingDataOptions."""
    values: dict = {}
    for item in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ("L", "T", "n", "seed"):
            raise ValueError(f"ising: cannot read option {item!r}; write e.g. 'ising:L=8,T=2.27,n=10000,seed=0' "
                             "(several temperatures as T=1.5/2.0/2.5)")
        try:
            if key == "T":
                values["temperatures"] = tuple(float(t) for t in value.split("/"))
            else:
                values[key] = int(value)
        except ValueError:
            raise ValueError(f"ising: {key}={value!r} is not a number") from None
    return IsingDataOptions(**values)


def cache_path(root: Path, L: int, T: float, n: int, seed: int) -> Path:
    return Path(root) / NAME / f"L{L}-T{format_temperature(T)}-n{n}-seed{seed}.npz"


def load_temperature(root: Path | str, L: int, T: float, n: int, seed: int, *,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """n + n // TEST_FRACTION configurations (m, L, L) int8 +-1 at T and the sampling report: read from the cache,
    or sampled (on `device`) and written there atomically (a crash leaves no half file)."""
    path = cache_path(Path(root), L, T, n, seed)
    meta_path = path.with_suffix(".json")
    meta = read_json(meta_path)
    if path.exists() and meta and meta.get("version") == CACHE_VERSION:
        try:
            with np.load(path, allow_pickle=False) as f:
                spins = torch.from_numpy(f["spins"].astype(np.int8))
            os.utime(path)  # last used: the cache's retention drops the least recently used first
            return spins, meta
        except FileNotFoundError:  # evicted by another job between the check and the read: sample it again
            pass
    total = n + max(1, n // TEST_FRACTION)
    cfg = IsingConfig(L=L, temperatures=(float(T),), n=total, seed=seed)
    spins, report = sample_temperature(cfg, float(T), device=device)
    buf = io.BytesIO()
    np.savez_compressed(buf, spins=spins.cpu().numpy())
    atomic_write_bytes(path, buf.getvalue())
    meta = {"version": CACHE_VERSION, "L": L, "T": float(T), "n": n, "seed": seed, "report": asdict(report)}
    atomic_write_json(meta_path, meta)
    evict(Path(root), keep=path)
    return spins.cpu(), meta


def evict(root: Path, *, keep: Path | None = None, cap: int | None = None) -> list[Path]:
    """Delete the least recently used cached temperatures (and their reports) until the cache holds at most `cap`
    bytes (genlib.work_budget's, 2 GB), never `keep`: a long course's many sweeps cannot fill the disk, and a
    deleted temperature is only sampled again when a run asks for it. Returns the files deleted."""
    from genlib.work_budget import CAPS, cache_to_evict

    files = []
    for f in (Path(root) / NAME).glob("*.npz"):
        try:
            info = f.stat()
        except FileNotFoundError:
            continue
        files.append((str(f), info.st_size, info.st_mtime))
    gone = []
    for name in cache_to_evict(files, CAPS.ising_cache_bytes if cap is None else cap,
                               protect=[str(keep)] if keep else []):
        f = Path(name)
        f.with_suffix(".json").unlink(missing_ok=True)  # the report first: a report without its data is not trusted
        f.unlink(missing_ok=True)
        gone.append(f)
    return gone


class IsingImages(NamedTuple):
    """A sampled Ising dataset as images: genlib.data's registry wraps these fields in its ImageData."""

    name: str
    source: str
    classes: tuple[str, ...]  # "T=2.5", one per temperature: the labels
    x_train: torch.Tensor  # (n * temperatures, 1, L, L) uint8, 0 or 255
    y_train: torch.Tensor  # (n * temperatures,) int64, the temperature's index
    x_test: torch.Tensor
    y_test: torch.Tensor


def load(root: Path, download: bool = False, options: str = "", device: torch.device | str = "cpu") -> IsingImages:
    """The images of an ising dataset name's options (the loader genlib.data's registry calls)."""
    opts = parse(options)
    train, test, y_train, y_test, reports = [], [], [], [], []
    for i, T in enumerate(opts.temperatures):
        spins, meta = load_temperature(root, opts.L, T, opts.n, opts.seed, device=device)
        images = ((spins.to(torch.int16) + 1) * 127.5).round().to(torch.uint8).unsqueeze(1)  # (m, 1, L, L) 0 or 255
        train.append(images[: opts.n])
        test.append(images[opts.n:])
        y_train.append(torch.full((opts.n,), i, dtype=torch.int64))
        y_test.append(torch.full((images.shape[0] - opts.n,), i, dtype=torch.int64))
        reports.append(meta["report"])
    source = "Monte Carlo (genlib.ising.monte_carlo): " + "; ".join(
        f"T={format_temperature(r['T'])} {r['algorithm']}, {r['equilibration']} sweeps to equilibrate, "
        f"{r['decorrelation']} between samples (tau_int {max(r['tau_energy'], r['tau_abs_m']):.1f})" for r in reports)
    classes = tuple(f"T={format_temperature(t)}" for t in opts.temperatures)
    return IsingImages(name=opts.name, source=source, classes=classes,
                       x_train=torch.cat(train).contiguous(), y_train=torch.cat(y_train),
                       x_test=torch.cat(test).contiguous(), y_test=torch.cat(y_test))


def sampling_reports(root: Path | str, name: str) -> list[dict]:
    """The cached sampling reports of each temperature of dataset `name` (empty for those not generated yet)."""
    opts = parse(name.partition(":")[2])
    out = []
    for T in opts.temperatures:
        meta = read_json(cache_path(Path(root), opts.L, T, opts.n, opts.seed).with_suffix(".json"))
        if meta:
            out.append(meta["report"])
    return out


def is_cached(root: Path | str, name: str) -> bool:
    opts = parse(name.partition(":")[2])
    return all(cache_path(Path(root), opts.L, T, opts.n, opts.seed).exists() for T in opts.temperatures)


def spins_of(images: torch.Tensor) -> torch.Tensor:
    """uint8 ising images (m, 1, L, L) -> +-1 float spins (m, L, L)."""
    return torch.where(images.squeeze(1) > 127, 1.0, -1.0)

