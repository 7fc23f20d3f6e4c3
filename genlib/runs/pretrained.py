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

from genlib.models import model_class, model_names
from genlib.runs.store import RUN_ID_RE, Run, RunStore
from genlib.settings import current as current_settings


def default_pretrained_dir() -> Path | None:
    """$GENLIB_PRETRAINED_DIR, else the repository's pretrained/ folder; None when switched off."""
    return current_settings().pretrained_dir


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


# ---- which pretrained run a model page opens on ----

# The figures that rank pretrained runs of one model, best first: the first that every candidate has decides
# (lower is better unless marked "higher"). The Fréchet ratio is the distance over its train-vs-test floor.
RANKING: tuple[tuple[str, str], ...] = (("frechet_ratio", "lower"), ("iwae_nll", "lower"), ("neg_elbo", "lower"),
                                        ("test_log_likelihood", "higher"))


def manifest(source: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """MANIFEST.json's rows by run id (empty when there is none or it cannot be read)."""
    import json

    src = Path(source) if source is not None else default_pretrained_dir()
    try:
        rows = json.loads((Path(src) / "MANIFEST.json").read_text())["runs"]
        return {r["run_id"]: r for r in rows if isinstance(r, dict) and "run_id" in r}
    except (TypeError, OSError, ValueError, KeyError):
        return {}


def _figures(run: Run, row: dict[str, Any] | None) -> dict[str, float]:
    """A pretrained run's quality figures: its quality.json, then MANIFEST's "figures" (or "quality") over them."""
    figures: dict[str, Any] = dict((run.quality_summary() or {}).get("figures") or {})
    for key in ("quality", "figures"):
        extra = (row or {}).get(key)
        if isinstance(extra, dict):  # {"figures": {...}} or the figures themselves
            figures.update(extra["figures"] if isinstance(extra.get("figures"), dict) else extra)
    fd, floor = figures.get("frechet_distance"), figures.get("frechet_floor")
    if "frechet_ratio" not in figures and isinstance(fd, (int, float)) and isinstance(floor, (int, float)) \
            and floor > 0:
        figures["frechet_ratio"] = fd / floor
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def best_pretrained(runs: list[Run], model: str, source: Path | str | None = None) -> Run | None:
    """The pretrained run of `model` a page opens on: ranked by the first RANKING figure every candidate has (from
    quality.json or MANIFEST.json), else by its training loss where that is a likelihood bound (the model's
    likelihood_bound_metric: the VAE's negative ELBO; a GAN's or EBM's loss says nothing about sample quality), else
    the one trained for the most steps; ties go to the lower id. None when `runs` holds no pretrained run of
    `model`."""
    candidates = [r for r in runs if is_pretrained(r) and r.info().get("model") == model]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    rows = manifest(source)
    figures = {r.id: _figures(r, rows.get(r.id)) for r in candidates}
    for key, better in RANKING:
        if all(key in figures[r.id] for r in candidates):
            sign = -1.0 if better == "higher" else 1.0
            return min(candidates, key=lambda r: (sign * figures[r.id][key], r.id))
    states = {r.id: r.state() for r in candidates}
    loss = model_class(model).likelihood_bound_metric if model in model_names() else None
    if loss and all(isinstance((states[r.id].get("metrics") or {}).get(loss), (int, float)) for r in candidates):
        return min(candidates, key=lambda r: (states[r.id]["metrics"][loss], r.id))
    return min(candidates, key=lambda r: (-int(states[r.id].get("step") or 0), r.id))
