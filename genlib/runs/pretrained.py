"""The pretrained runs shipped in the repository's pretrained/ folder (made by scripts/pretrain.py): installed into a
runs folder on first use, so a fresh install opens every model page on a trained model, and kept read-only there.

A pretrained run is an ordinary run folder whose run.json carries a "pretrained" entry. Installing copies each folder
that the runs folder does not have yet (never over an existing one) through a temporary name and one rename, so a
crash leaves either the whole run or nothing. The job manager refuses to resume or delete a pretrained run; forking
it (genlib.runs.forks) makes a new, ordinary run that starts from its weights.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from genlib.runs.store import RUN_ID_RE, Run, RunStore

PRETRAINED_ENV = "GENLIB_PRETRAINED_DIR"  # a folder of pretrained runs; "none" (or empty) installs nothing
DISABLED = ("", "none", "0", "off", "false")


def default_pretrained_dir() -> Path | None:
    """$GENLIB_PRETRAINED_DIR, else the repository's pretrained/ folder; None when switched off."""
    value = os.environ.get(PRETRAINED_ENV)
    if value is not None:
        return None if value.strip().lower() in DISABLED else Path(value)
    return Path(__file__).resolve().parents[2] / "pretrained"


def is_pretrained(info_or_run: dict[str, Any] | Run) -> bool:
    info = info_or_run.info() if isinstance(info_or_run, Run) else info_or_run
    return bool(info.get("pretrained"))


def shipped(source: Path | str | None = None) -> list[Path]:
    """The pretrained run folders in `source` (default: default_pretrained_dir()), by name."""
    src = Path(source) if source is not None else default_pretrained_dir()
    if src is None or not src.is_dir():
        return []
    return sorted(p for p in src.iterdir() if p.is_dir() and RUN_ID_RE.match(p.name) and (p / "run.json").is_file()
                  and (p / "checkpoints" / "last.safetensors").is_file())


def install(store: RunStore, source: Path | str | None = None) -> list[str]:
    """Copy every shipped run that `store` lacks into it; returns the ids installed now (existing ones are kept
    as they are, whatever they hold). Raises OSError when the runs folder cannot be written."""
    folders = shipped(source)
    if not folders:
        return []
    store.ensure_writable()
    installed = []
    for folder in folders:
        target = store.root / folder.name
        if target.exists():
            continue
        tmp = store.root / f".{folder.name}.installing-{secrets.token_hex(3)}"
        try:
            shutil.copytree(folder, tmp)
            os.rename(tmp, target)  # fails (and is skipped) when another process installed it meanwhile
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.exists():
                raise
            continue
        installed.append(folder.name)
    return installed


def refuse_if_pretrained(run: Run, action: str) -> None:
    """ValueError for an action that would change a pretrained run (resume, delete), saying what to do instead."""
    if is_pretrained(run):
        raise ValueError(f"{run.id} is a pretrained model shipped with the app and is kept read-only, so it cannot "
                         f"be {action}. Fork it to train a copy further (the fork is an ordinary run).")
