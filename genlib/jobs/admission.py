"""Admission across app servers: each device's job cap counted from the runs folder itself (live runs' state.json
and its heartbeat, admitted runs whose worker is still starting, running evaluations' status files), under a lock
file, so that several servers on one runs folder never admit past the cap together (each used to count its own).

The lock is `flock` on `<runs>/.admission.lock` (on NFS, Linux maps it onto the server's byte-range locks); it is held
only while one server counts and marks what it admits, never while a job runs.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from genlib.runs.io import atomic_write_json
from genlib.runs.store import Run, RunStore, pid_alive, this_host

LOCK_NAME = ".admission.lock"
ADMIT_GRACE_S = 120.0  # an admitted run whose worker has not yet written 'running' holds its slot this long
QUEUE_BEAT_S = 10.0  # the server that queued a run rewrites its place at least this often...
QUEUE_STALE_S = 60.0  # ...so another server shows it as queued until this long after the last rewrite
EVAL_STALE_S = 300.0  # genlib.quality.records.STATUS_STALE_S: a 'running' evaluation status older than this is dead


def device_key(device: str) -> str:
    """The cap's unit: "cpu", "cuda" (every cuda:N together), or the device name as given ("auto", "mps")."""
    return "cpu" if device == "cpu" else ("cuda" if str(device).startswith("cuda") else str(device))


def server_mark() -> dict[str, Any]:
    """Who queued or admitted a run: this host and server process."""
    return {"host": this_host(), "pid": os.getpid()}


def mark_alive(mark: Any, updated: Any, stale_s: float) -> bool:
    """Whether the server in `mark` still holds what it marked: a dead pid on this host says no at once; otherwise
    (another host, or this very process, where another manager or a closed one may have marked it) the time since
    the holder last rewrote the file decides."""
    if not isinstance(mark, dict):
        return False
    if mark.get("host") == this_host() and mark.get("pid") != os.getpid() and pid_alive(mark.get("pid")) is False:
        return False
    try:
        return time.time() - float(updated or 0) < stale_s
    except (TypeError, ValueError):
        return False


@contextmanager
def admission_lock(root: Path) -> Iterator[bool]:
    """Hold the runs folder's admission lock; yields False (and holds nothing) where the folder takes no files."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False  # a read-only runs folder: nothing can be started there anyway, and each write says so
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def run_device(run: Run) -> str:
    return device_key(str((run.info().get("train_config") or {}).get("device", "cpu")))


def holds_training_slot(run: Run, state: dict[str, Any], now: float) -> bool:
    """A run whose worker trains or is paused (its heartbeat or pid says so), or one admitted moments ago."""
    name = state.get("state")
    if name in ("running", "paused"):
        return run.effective_state() in ("running", "paused")
    if name == "queued" and state.get("admitted"):
        try:
            return now - float(state["admitted"]) < ADMIT_GRACE_S
        except (TypeError, ValueError):
            return False
    return False


def holds_evaluation_slot(status: dict[str, Any], now: float) -> bool:
    """An evaluation admitted or running (its status fresh; a pid on this host must be alive); not a queued one."""
    if status.get("state") != "running" or status.get("queued"):
        return False
    try:
        if now - float(status.get("updated") or 0) >= EVAL_STALE_S:
            return False
    except (TypeError, ValueError):
        return False
    return status.get("pid") == os.getpid() or pid_alive(status.get("pid"), status.get("host")) is not False


def slots_in_use(store: RunStore) -> dict[str, set[str]]:
    """Device key -> the job keys (run id, or "<run id>:evaluate") holding a slot, as the runs folder shows them."""
    now = time.time()
    used: dict[str, set[str]] = {}
    for run in store.list():
        try:
            if holds_training_slot(run, run.state(), now):
                used.setdefault(run_device(run), set()).add(run.id)
            if holds_evaluation_slot(run.quality_status(), now):
                used.setdefault("cpu", set()).add(f"{run.id}:evaluate")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a folder being written or deleted right now: it is seen on the next pass
    return used


def count(used: dict[str, set[str]]) -> Counter[str]:
    return Counter({k: len(v) for k, v in used.items()})


def write_evaluation_status(run: Run, kind: str, message: str, *, state: str = "running", queued: bool = False,
                            place: int | None = None, **extra: Any) -> None:
    """quality-status.json as genlib.quality.records writes it, for an evaluation this server queued or starts: state
    'running' (so the panel shows it busy and a second click is refused) with the server's pid until the evaluation's
    own process takes the file over; `queued` marks one that holds no slot yet."""
    if place is not None:
        message = f"queued: {'next' if place == 1 else f'{place} in line'} for a free slot"
    atomic_write_json(run.quality_status_path, within=run.path, obj=  # never recreates a deleted run folder
                      {"state": state, "kind": kind, "fraction": 0.0, "message": message, "pid": os.getpid(),
                       "host": this_host(), "updated": time.time(), "queued": queued, "queue_place": place, **extra})


def fail_silent_evaluation(run: Run, kind: str, reason: str | None) -> None:
    """An evaluation that ended while its status still says running (killed, or never started) is marked failed."""
    if run.quality_status().get("state") != "running":
        return  # it recorded how it ended (done, failed, cancelled)
    try:
        write_evaluation_status(run, kind, f"the evaluation ended without a result: {reason or 'unknown'}",
                                state="failed")
    except OSError:
        pass


def queued_elsewhere(state: dict[str, Any]) -> bool:
    """A run queued by another server on this runs folder that still holds it (or admitted moments ago)."""
    if state.get("admitted"):
        try:
            return time.time() - float(state["admitted"]) < ADMIT_GRACE_S
        except (TypeError, ValueError):
            return False
    return mark_alive(state.get("queued_by"), state.get("updated"), QUEUE_STALE_S)
