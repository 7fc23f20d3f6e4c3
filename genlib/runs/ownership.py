"""One owner per run folder: the process that trains a run (or deletes it) holds an exclusive, non-blocking `flock`
on `<run>/owner.lock` from before its first write until it ends; a second one (the CLI, a server's worker, a standby,
a Ray job) that cannot take it refuses, naming the owner, and writes nothing. The kernel drops the flocks of a dead
process, so a crash or a SIGKILL never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from genlib.settings import current as current_settings

LOCK_NAME = "owner.lock"
OWNED_EXIT = 3  # a worker process's exit code when another process owns its run folder (genlib.jobs.launchers)
TAKE_WAIT_S = 0.5  # a free lock is probed (held for microseconds) by liveness checks: a taker waits such a moment out
NAME_WAIT_S = 2.0  # how long a refused taker waits for the owner to write who it is (it does so right after taking)


class RunOwned(ValueError):
    """Another process owns the run folder (or the folder is gone): nothing was written."""


class OwnerLock:
    """A held owner lock: the flock lives as long as this descriptor stays open (release(), or the process's end)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> "OwnerLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def take(folder: Path, what: str = "a training worker") -> OwnerLock:
    """Take `folder`'s owner lock and record in it who holds it (pid, host, node, `what`); RunOwned, with the owner
    named, when another process or thread holds it, or when the folder was deleted (it is never recreated)."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CREAT without the folder: FileNotFoundError
    except FileNotFoundError:
        raise RunOwned(f"run folder {folder} no longer exists (was it deleted?): nothing was written.") from None
    deadline = time.monotonic() + TAKE_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise RunOwned(refusal(folder, _wait_for_name(path))) from None
            time.sleep(0.02)
    if not (folder / "run.json").exists():  # deleted between the open and the lock: the lock is on an unlinked file
        os.close(fd)
        raise RunOwned(f"run folder {folder} no longer exists (was it deleted?): nothing was written.")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "node": current_settings().node_id, "what": what,
          "since": round(time.time(), 3)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    return OwnerLock(fd, path)


def holder(folder: Path) -> dict[str, Any] | None:
    """Who holds `folder`'s owner lock now, as the holder wrote it ({} while it has not yet), or None when nobody
    does (or the folder has no lock file: no worker since owner locks exist). A probe: it holds a shared lock for a
    moment when the lock is free (take() waits such a moment out), and never creates a file."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        except OSError:
            return None
        return None
    finally:
        os.close(fd)


def describe(who: dict[str, Any]) -> str:
    """"a training worker (pid 123 on host h)", as genlib.runs.store.Owner.describe words it."""
    pid = f"pid {who['pid']}" if who.get("pid") is not None else "a process"
    where = f"host {who['host']}" if who.get("host") else "an unknown host"
    node = f", node {who['node']}" if who.get("node") else ""
    return f"{who.get('what') or 'another process'} ({pid} on {where}{node})"


def refusal(folder: Path, who: dict[str, Any]) -> str:
    return (f"run {Path(folder).name} is owned by {describe(who)}, which holds {LOCK_NAME} in its folder: a second "
            "process may not write it. Stop that one (or wait for it to end), then try again; nothing was written.")


def _read(fd: int) -> dict[str, Any]:
    try:
        who = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return who if isinstance(who, dict) else {}


def _wait_for_name(path: Path) -> dict[str, Any]:
    """The holder's record, waiting briefly for a holder that took the lock a moment ago to write it."""
    deadline = time.monotonic() + NAME_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return {}
        try:
            who = _read(fd)
        finally:
            os.close(fd)
        if who or time.monotonic() >= deadline:
            return who
        time.sleep(0.02)
