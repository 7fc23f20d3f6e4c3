"""Forks of a run: a new run that starts from one of a run's saved checkpoints with one or more settings changed
(the learning rate, the VAE's beta, the RBM's k, the number of epochs), recorded as forked_from and change, so the
branches' curves and samples can be compared; plus the per-epoch checkpoints that make earlier branch points possible.

A fork shares its parent's history up to the branch point: the fork's metrics.jsonl starts with the parent's rows up
to that step and a "fork" event, and its samples/ with the parent's grids up to that epoch, so its own chart and its
progression show the whole path. The worker then resumes the copied checkpoint like any run.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlib.runs.io import append_jsonl, atomic_write_bytes
from genlib.runs.schema import ForkOrigin, RunRecord
from genlib.runs.store import Run, RunStore

MAX_EPOCH_CHECKPOINTS = 12  # per run; beyond it every other older one is dropped (spacing doubles, ends kept)
EPOCH_CKPT_RE = re.compile(r"^epoch-(\d{4,})\.safetensors$")
TRAIN_SETTINGS = ("lr", "epochs", "max_steps")  # training settings a fork may change (batch size would break steps)


# ---- per-epoch checkpoints ----

def epoch_checkpoint_path(run: Run, epoch: int) -> Path:
    return run.path / "checkpoints" / f"epoch-{epoch:04d}.safetensors"


def save_epoch_checkpoint(run: Run, model: Any, epoch: int, *, train_config: dict[str, Any],
                          progress: dict[str, Any], extra: dict[str, Any]) -> None:
    """The weights after `epoch` in float16 with the live knobs (about half a last.safetensors without the optimiser),
    so a fork can branch from any epoch; keeps at most MAX_EPOCH_CHECKPOINTS per run."""
    from genlib.runs.checkpoints import checkpoint_bytes

    data = checkpoint_bytes(model, train_config=train_config, progress=progress, half=True,
                            extra={**extra, "knobs": model.knobs()})
    atomic_write_bytes(epoch_checkpoint_path(run, epoch), data)
    for path in thin(epoch_checkpoints(run), MAX_EPOCH_CHECKPOINTS):
        path.unlink(missing_ok=True)


def thin(paths: list[Path], keep: int) -> list[Path]:
    """Which of `paths` (oldest first) to delete so at most `keep` remain: every other one, newest and oldest kept."""
    paths = list(paths)
    drop: list[Path] = []
    while len(paths) > max(2, keep):
        older = paths[1:-1]
        gone = older[::2]
        drop += gone
        paths = [paths[0]] + [p for p in older if p not in gone] + [paths[-1]]
    return drop


def epoch_checkpoints(run: Run) -> list[Path]:
    folder = run.path / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if EPOCH_CKPT_RE.match(p.name))


@dataclass(frozen=True)
class BranchPoint:
    """A checkpoint a fork can start from: "last" or "epoch-NNNN", its file and the step it was saved at."""

    name: str
    path: Path
    step: int
    epoch: int


def branch_points(run: Run) -> list[BranchPoint]:
    """The run's checkpoints a fork can start from, newest (the last checkpoint) first."""
    from genlib.runs.checkpoints import CheckpointError, load_checkpoint, read_header

    out = []
    candidates = [("last", run.checkpoint_path)] + [(p.stem, p) for p in reversed(epoch_checkpoints(run))]
    for name, path in candidates:
        if not path.exists():
            continue
        try:
            progress = read_header(path).get("progress") or load_checkpoint(path).progress
        except (CheckpointError, OSError, ValueError):
            continue
        out.append(BranchPoint(name, path, int(progress.get("step", 0)), int(progress.get("epoch", 0))))
    return out


# ---- the settings a run trains with now ----

def current_settings(run: Run) -> dict[str, Any]:
    """The live knobs as the run's worker was last asked for them (control file), else as configured:
    e.g. {"lr": 1e-3, "beta": 1.0} for a VAE, {"lr": 0.1, "k": 1} for an RBM."""
    from genlib.models import model_class

    info, control = run.info(), run.control()
    cls = model_class(info["model"])
    out: dict[str, Any] = {}
    for name in cls.live_knobs:
        value = control.get(name)
        if value is None:
            value = (info.get("train_config") or {}).get(name) if name == "lr" else \
                (info.get("model_config") or {}).get(name)
        if value is not None:
            out[name] = value
    return out


def check_knobs(model_name: str, knobs: dict[str, Any]) -> None:
    """ValueError (naming the setting) unless every knob is a live setting of `model_name` with a valid value."""
    from genlib.models import model_class

    cls = model_class(model_name)
    for name, value in knobs.items():
        cls.check_knob(name, value)


# ---- forking ----

def create_fork(store: RunStore, parent: Run, changes: dict[str, Any], *, checkpoint: str = "last",
                title: str | None = None) -> Run:
    """A new queued run that continues `parent` from its checkpoint `checkpoint` ("last" or "epoch-NNNN") with
    `changes` applied (live knobs: lr, beta, k; training settings: epochs, max_steps; max_steps None removes it).

    The change is recorded in the new run's run.json as forked_from (genlib.runs.schema.ForkOrigin: run_id,
    checkpoint, step, epoch, changed {name: [old, new]}). Raises ValueError for an unknown setting, a bad value, a
    missing checkpoint, or a fork that would have nothing left to train.
    """
    from genlib.models import make_config, model_class
    from genlib.runs.checkpoints import read_header
    from genlib.training import TrainConfig, total_steps

    info = parent.info()
    model_name = info["model"]
    cls = model_class(model_name)
    if not changes:
        raise ValueError("a fork changes at least one setting; choose what to change")
    unknown = sorted(set(changes) - set(cls.live_knobs) - set(TRAIN_SETTINGS))
    if unknown:
        raise ValueError(f"a {model_name.upper()} fork cannot change {', '.join(unknown)}; it can change "
                         f"{', '.join(dict.fromkeys(cls.live_knobs + TRAIN_SETTINGS))}")
    point = next((b for b in branch_points(parent) if b.name == checkpoint), None)
    if point is None:
        raise ValueError(f"run {parent.id} has no checkpoint {checkpoint!r} to fork from")
    header = read_header(point.path)
    before = {**current_settings(parent), **{k: v for k, v in ((header.get("extra") or {}).get("knobs") or {}).items()
                                            if k in cls.live_knobs}}
    tc = dict(info["train_config"])
    before.update({k: tc.get(k) for k in TRAIN_SETTINGS if k not in cls.live_knobs})
    for name, value in changes.items():
        if name in cls.live_knobs:
            cls.check_knob(name, value)
        if name in TRAIN_SETTINGS:
            tc[name] = value
    train_config = dataclasses.asdict(TrainConfig(**tc))  # refuses bad epochs / max_steps / lr
    mc = dict(info.get("model_config") or {})
    for name, value in changes.items():
        if name in cls.live_knobs and name in mc:  # the start value of beta / k in this branch
            mc[name] = value
    model_config = dataclasses.asdict(make_config(model_name, mc))
    spe = int(parent.state().get("steps_per_epoch") or 0)
    if spe and total_steps(TrainConfig(**train_config), spe) <= point.step:
        raise ValueError(f"the fork would start at step {point.step:,} (epoch {point.epoch}) with nothing left to "
                         f"train: ask for more than {point.epoch} epochs (or a larger max_steps)")
    changed = {k: [before.get(k), v] for k, v in changes.items() if before.get(k) != v}
    if not changed:
        raise ValueError("the fork would train exactly as its parent: change a setting to a new value")
    run = store.create(RunRecord(model=model_name, model_config=model_config, train_config=train_config,
                                 dataset=parent.dataset(),
                                 title=title or f"fork of {parent.id}: " + ", ".join(f"{k} {v[1]}"
                                                                                    for k, v in changed.items()),
                                 forked_from=ForkOrigin(run_id=parent.id, checkpoint=point.name, step=point.step,
                                                        epoch=point.epoch, changed=changed)))
    try:
        atomic_write_bytes(run.checkpoint_path, point.path.read_bytes(), within=run.path)
        rows, _ = parent.metrics()
        history = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= point.step]
        history.append({"event": "fork", "step": point.step, "parent": parent.id, "checkpoint": point.name,
                        "changed": changed, "t": round(time.time(), 3)})
        append_jsonl(run.metrics_path, history)
        for grid in parent.epoch_grids():
            if int(grid.stem.split("-")[-1]) <= point.epoch:
                atomic_write_bytes(run.samples_dir / grid.name, grid.read_bytes(), within=run.path)
        if parent.live_png.exists():
            shutil.copyfile(parent.live_png, run.live_png)
        knobs = {k: changes.get(k, before.get(k)) for k in cls.live_knobs if changes.get(k, before.get(k)) is not None}
        run.write_state(state="queued", step=point.step, epoch=point.epoch, steps_per_epoch=spe or None,
                        message=f"forked from {parent.id} at step {point.step:,}")
        run.send(command="run", **knobs)
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run


def family(store: RunStore, run: Run) -> list[Run]:
    """`run`, its ancestors and every run forked from any of them (siblings, children), oldest first."""
    runs = {r.id: r for r in store.list()}
    parents = {rid: _fork_parent(r) for rid, r in runs.items()}  # forks only: an upload or a sweep is no branch
    root = run.id
    seen = {root}
    while parents.get(root) in runs and parents[root] not in seen:
        root = parents[root]
        seen.add(root)
    members, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        for rid, pid in parents.items():
            if pid == current and rid not in members:
                members.add(rid)
                frontier.append(rid)
    members.add(run.id)
    return sorted((runs[m] for m in members if m in runs), key=lambda r: r.info().get("created", 0))


def _fork_parent(run: Run) -> str | None:
    try:
        origin = run.record().forked_from
    except (FileNotFoundError, ValueError):  # deleted meanwhile, or not a run: no family
        return None
    return origin.run_id if origin is not None else None
