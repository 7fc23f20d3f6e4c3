"""Crash-safe file writes: every file genlib writes is complete or absent, never half-written (write, flush, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


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
