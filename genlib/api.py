"""The notebook API: `train`, `sample` and `evaluate`, the three CLI commands as functions that return Python objects
(a Run, a tensor, a quality record) instead of printing a JSON line; each runs the CLI's own code in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from genlib.cli import build_parser, run_train_command, sample_run
from genlib.quality.records import evaluate_saved_run, evaluation_device
from genlib.quality.settings import KINDS, settings_for
from genlib.runs.store import Run, open_run


def _run_path(run: Run | str | os.PathLike) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def _parse(argv: list[str]) -> argparse.Namespace:
    """The CLI parser's result, or ValueError with its message (argparse itself would print it and exit)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise ValueError(lines[-1].split("error: ", 1)[-1] if lines else f"invalid arguments {argv}") from None


def _train_args(model: str | None, settings: dict[str, Any]) -> argparse.Namespace:
    """The train command's arguments for these keyword settings, checked by the CLI's own parser (names, types,
    choices), so the API refuses exactly what the command line refuses, before any run folder exists."""
    names = sorted(set(vars(_parse(["train"]))) - {"command", "model"})
    argv = ["train"] + ([model] if model is not None else [])
    for name, value in settings.items():
        if name not in names:
            raise ValueError(f"unknown setting {name!r}: train() takes {', '.join(names)}")
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            else:  # --no-X where the flag has that form; elsewhere False is the flag's default, off
                try:
                    _parse(["train", "--no-" + flag[2:]])
                    argv.append("--no-" + flag[2:])
                except ValueError:
                    pass
            continue
        if isinstance(value, Run):
            value = value.path
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        argv.append(f"{flag}={value}")  # one token, so a value such as -1 is never read as a flag
    return _parse(argv)


def train(model: str | None = None, *, dataset: str | None = None, steps: int | None = None,
          epochs: int | None = None, runs_dir: str | os.PathLike | None = None, **settings: Any) -> Run:
    """Train a new run of `model` ("rbm", "vae", "gan" or "ebm") in the foreground, as `python -m genlib train` does,
    and return its Run (the folder holds run.json, metrics.jsonl, checkpoints, sample grids, quality records).

    `steps` stops after that many updates (the CLI's --max-steps), `epochs` after that many passes; with neither, the
    seed's epochs. `settings` are the train command's other flags with underscores, as Python values: `lr=1e-3`,
    `batch_size=64`, `ema=0.999`, `latent=2`, `hidden=256`, `k=5`, `pcd=True`, `device="cpu"`, `threads=1`, `seed=0`,
    `data_root=...`, `preset="lecture"`, `evaluate="none"` (no quality figures; the default "cheap" takes seconds),
    `quiet=True` (no progress line on stderr); `resume=run` continues a run instead (then no model).
    Raises ValueError for a setting or value the CLI would refuse, before any run folder is written, and RuntimeError
    when the run fails or diverges (its folder keeps the error).
    """
    if "max_steps" in settings:
        raise ValueError("give the number of updates as steps=... (the CLI's --max-steps)")
    args = _train_args(model, {**settings, "dataset": dataset, "max_steps": steps, "epochs": epochs,
                               "runs_dir": runs_dir})
    summary = run_train_command(args)
    if summary["state"] in ("failed", "diverged"):
        raise RuntimeError(f"run {summary['run_id']} {summary['state']}: {summary.get('error')} "
                           f"(its folder: {summary['run_dir']})")
    return Run(Path(summary["run_dir"]))


def sample(run: Run | str | os.PathLike, n: int = 64, *, seed: int = 0, device: str = "auto") -> torch.Tensor:
    """`n` new images from a run's newest weights (a Run or its folder's path), as `python -m genlib sample` draws
    them: a float32 CPU tensor of shape (n, C, H, W) with values in [0, 1] ((n, 1, 28, 28) for MNIST and digits);
    the same seed gives the same images."""
    return sample_run(_run_path(run), n, seed=seed, device=device)[2]


def evaluate(run: Run | str | os.PathLike, kind: str = "cheap", *, device: str = "auto",
             data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Quality figures of a run's newest weights with genlib.quality's CHEAP, FINAL or FULL settings (`kind`),
    recorded in the run folder (quality.jsonl) like every other evaluation; returns the record: `kind`, `step`,
    `seconds`, `settings` and `figures` (e.g. the VAE's "neg_elbo" and "iwae_nll", the RBM's "test_log_likelihood",
    with their "_se" standard errors). Raises RuntimeError when the evaluation failed (the error is recorded too).

    "cheap" takes seconds; "final" and "full" take minutes on a CPU and train the dataset's classifier once."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    record = evaluate_saved_run(open_run(_run_path(run)), settings_for(kind), device=evaluation_device(device),
                                data_root=data_root, cache_dir=cache_dir)
    if record.get("error"):
        raise RuntimeError(f"the {kind} evaluation of {_run_path(run)} failed: {record['error']}")
    return record
