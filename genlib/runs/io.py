"""Crash-safe file writes: every file genlib writes is complete or absent, never half-written (write, flush, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder that holds it (a no-op where the OS refuses)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes, *, within: Path | str | None = None) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix.

    Missing folders are created, but with `within` (a run folder) only those below it: when `within` itself is gone
    (the run was deleted) this raises FileNotFoundError instead of recreating it.
    """
    path = Path(path)
    if within is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(within)
        if not folder.is_dir():
            raise FileNotFoundError(2, "the folder is gone (deleted?); nothing was written", str(folder))
        for part in path.parent.relative_to(folder).parts:  # one level at a time: never recreates `within`
            folder = folder / part
            folder.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path | str, obj: Any, *, within: Path | str | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode(),
                       within=within)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_json(path: Path | str, default: Any = None) -> Any:
    """Read a JSON file, returning `default` when it is absent or unreadable."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def append_jsonl(path: Path | str, rows: list[dict]) -> None:
    """Append complete JSON lines in one write; a crash can cut only the last line, which readers skip."""
    if not rows:
        return
    text = "".join(json.dumps(r, separators=(",", ":"), default=_json_default) + "\n" for r in rows)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # a torn line from a killed writer: end it, so it stays one skipped line instead of swallowing this one
            text = "\n" + text
        data = memoryview(text.encode())
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except BaseException:
            # a full disk mid-append: take back the partial rows, so the log stays what it was
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def read_jsonl(path: Path | str, offset: int = 0) -> tuple[list[dict], int]:
    """Rows of a JSON-lines file from byte `offset`, and the offset after the last complete line.

    An incomplete or corrupt last line (a crash mid-append) is left for the next read, never raised.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    rows: list[dict] = []
    end = data.rfind(b"\n")
    if end < 0:
        return rows, offset
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn line from a crash in the middle of the log: skip it, keep the rest
    return rows, offset + end + 1


@contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock (fcntl.flock on `.<name>.lock` beside `path`) for a read-modify-write of `path`, so two
    writers (two server tabs, a server and a worker) cannot interleave and lose an update. Works between threads and
    processes on one machine; the folder must exist (a deleted run folder raises FileNotFoundError, never reappears)."""
    import fcntl

    path = Path(path)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
