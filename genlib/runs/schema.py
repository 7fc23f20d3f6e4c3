"""The run folder's JSON files as typed, versioned records (run.json, state.json, control.json, the quality records):
one definition each, a validating `load` that names the file and the fault, an atomic `save`, and locked updates.

The run folder is the protocol between the server, its workers and the evaluations (docs/architecture.md has the
table of who writes what). A file without a "version" was written before this schema (version 1): it is migrated on
read and never rewritten by reading, so the shipped pretrained/ runs and a user's old runs open as they are. A file
from a newer genlib (a higher version) is refused with a message rather than half understood.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from genlib.runs.io import atomic_write_json, file_lock

LEGACY_VERSION = 1  # every file written before the schema (no "version" key)
RUN_VERSION = 2  # 2: the one "parent" became forked_from / uploaded_from / sweep
STATE_VERSION = 2  # 2: host and node of the worker, so a pid is only trusted on its own machine
CONTROL_VERSION = 2  # 2: the version key (the fields are version 1's)
QUALITY_VERSION = 2  # 2: the version key; quality-status.json also names its host

LIVE_STATES = ("queued", "running", "paused")
STATES = LIVE_STATES + ("finished", "stopped", "failed", "diverged", "interrupted")
COMMANDS = ("run", "pause", "stop")
QUALITY_STATES = ("running", "done", "failed", "cancelled")
SWEEP_KIND = "ising-sweep"
MAX_FILE_BYTES = 8 * 2**20  # a run-folder JSON file larger than this is not one of ours


class SchemaError(ValueError):
    """A run-folder file that is not what its name says (foreign, damaged, or from a newer genlib); the message names
    the file and the fault."""


# ---- checks shared by the records ----

def _fault(where: str, fault: str) -> SchemaError:
    return SchemaError(f"{where}: {fault}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _take(d: dict[str, Any], key: str, where: str, kind: str, default: Any = None, *, optional: bool = True) -> Any:
    """d[key] checked against `kind` (int, num, str, dict, list, scalar); None allowed when `optional`."""
    v = d.get(key, default)
    if v is None and optional:
        return None
    ok = {"int": _is_int, "num": _is_num, "str": lambda x: isinstance(x, str),
          "dict": lambda x: isinstance(x, dict), "list": lambda x: isinstance(x, list),
          "scalar": lambda x: x is None or isinstance(x, (bool, int, float, str))}[kind](v)
    if not ok or (kind in ("int", "num") and v < 0):
        raise _fault(where, f"{key!r} must be {'a non-negative ' + kind if kind in ('int', 'num') else 'a ' + kind}"
                            f"{' or null' if optional else ''}, got {v!r}")
    return v


def _version(d: dict[str, Any], current: int, where: str) -> int:
    v = d.get("version", LEGACY_VERSION)
    if not _is_int(v) or v < 1:
        raise _fault(where, f"'version' must be a whole number from 1, got {v!r}")
    if v > current:
        raise _fault(where, f"version {v} was written by a newer genlib (this one reads up to {current}); "
                            "update genlib to open this run")
    return v


def _read(path: Path | str) -> dict[str, Any]:
    """The JSON object in `path`; FileNotFoundError when absent, SchemaError naming the file when it is not one."""
    path = Path(path)
    with open(path, "rb") as f:  # FileNotFoundError passes: an absent file is the caller's case
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _fault(str(path), f"over {MAX_FILE_BYTES // 2**20} MB: not a genlib run file")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise _fault(str(path), f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fault(str(path), f"holds a JSON {type(obj).__name__}, not an object")
    return obj


class _Record:
    """load/save shared by the records: `from_dict` validates and migrates, `to_dict` is what goes on disk."""

    KNOWN: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "record") -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path | str) -> Any:
        """The record in `path`, validated (SchemaError naming file and fault); FileNotFoundError when absent."""
        return cls.from_dict(_read(path), where=str(path))

    def save(self, path: Path | str) -> None:
        """Write atomically; never creates the folder (a deleted run stays deleted: FileNotFoundError)."""
        path = Path(path)
        atomic_write_json(path, self.to_dict(), within=path.parent)


def _extra(d: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Fields this version does not know: kept as they were, so a newer writer's additions survive a rewrite."""
    return {k: v for k, v in d.items() if k not in known}


# ---- run.json ----

@dataclass(frozen=True, kw_only=True)
class ForkOrigin:
    """A fork: the run and checkpoint it branched from, and the settings it changed ({name: [old, new]})."""

    run_id: str
    checkpoint: str = "last"
    step: int = 0
    epoch: int = 0
    changed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ForkOrigin:
        if not isinstance(d, dict):
            raise _fault(where, f"'forked_from' must be an object, got {d!r}")
        return cls(run_id=_take(d, "run_id", where, "str", optional=False),
                   checkpoint=_take(d, "checkpoint", where, "str", "last", optional=False),
                   step=_take(d, "step", where, "int", 0, optional=False),
                   epoch=_take(d, "epoch", where, "int", 0, optional=False),
                   changed=dict(_take(d, "changed", where, "dict", {}) or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "checkpoint": self.checkpoint, "step": self.step, "epoch": self.epoch,
                "changed": dict(self.changed)}


@dataclass(frozen=True, kw_only=True)
class UploadOrigin:
    """An uploaded checkpoint: the file's name, and the run id its header claims (shown only: an upload is never
    linked to a local run of that id, which may be another run altogether)."""

    file: str
    claimed_run_id: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str) -> UploadOrigin:
        if not isinstance(d, dict):
            raise _fault(where, f"'uploaded_from' must be an object, got {d!r}")
        return cls(file=_take(d, "file", where, "str", optional=False),
                   claimed_run_id=_take(d, "claimed_run_id", where, "str", "") or "")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "claimed_run_id": self.claimed_run_id}


@dataclass(frozen=True, kw_only=True)
class SweepMember:
    """One temperature T of an Ising sweep (genlib.ising.compare), the sweep named by `id`."""

    id: str
    T: float
    kind: str = SWEEP_KIND

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SweepMember:
        if not isinstance(d, dict):
            raise _fault(where, f"'sweep' must be an object, got {d!r}")
        T = d.get("T")
        if not _is_num(T):
            raise _fault(where, f"the sweep's 'T' must be a number, got {T!r}")
        return cls(id=_take(d, "id", where, "str", optional=False), T=float(T),
                   kind=_take(d, "kind", where, "str", SWEEP_KIND, optional=False))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "T": self.T}


def _legacy_parent(parent: Any, where: str) -> dict[str, Any]:
    """Version 1's one "parent" field, read as what it meant: an upload ({"uploaded", "run_id"}), a sweep member
    ({"kind": "ising-sweep", "id", "T"}) or a fork ({"run_id", "checkpoint", "step", "epoch", "changed"})."""
    if parent is None:
        return {}
    if not isinstance(parent, dict):
        raise _fault(where, f"'parent' must be an object or null, got {parent!r}")
    if "uploaded" in parent:
        return {"uploaded_from": UploadOrigin(file=str(parent["uploaded"]),
                                              claimed_run_id=str(parent.get("run_id") or ""))}
    if parent.get("kind") == SWEEP_KIND:
        return {"sweep": SweepMember.from_dict(parent, where)}
    if parent.get("run_id"):
        return {"forked_from": ForkOrigin.from_dict(parent, where)}
    if not parent:
        return {}
    raise _fault(where, f"'parent' {parent!r} is none of a fork, an upload or an Ising sweep")


@dataclass(frozen=True, kw_only=True)
class RunRecord(_Record):
    """run.json: what a run is (model and its config, training config, dataset, title, origin). Written once when
    the run is made (RunStore.create); rewritten only by a resume that changes its end (the server or the CLI, never
    while a worker owns the run)."""

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None  # as given at creation; Run.dataset() / `resolved_dataset` say which one is used
    id: str = ""
    created: float = 0.0
    title: str | None = None
    forked_from: ForkOrigin | None = None
    uploaded_from: UploadOrigin | None = None
    sweep: SweepMember | None = None
    pretrained: dict[str, Any] | None = None  # set on the shipped runs (genlib.runs.pretrained): read-only
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = RUN_VERSION

    KNOWN: ClassVar[tuple[str, ...]] = ("version", "model", "model_config", "train_config", "dataset", "id",
                                        "created", "title", "forked_from", "uploaded_from", "sweep", "pretrained",
                                        "parent")

    @property
    def resolved_dataset(self) -> str:
        """The dataset the run trains on: run.json's "dataset", else its training config's, else TrainConfig's
        default ("mnist"), which is what a run without either was trained on. Never the offline "digits": a page
        that cannot find the run's dataset says so and substitutes there (dashboard.explore.widgets.test_data)."""
        named = self.dataset or self.train_config.get("dataset")
        if named:
            return named
        from genlib.training import TrainConfig  # torch: imported only for the rare run that names no dataset

        return TrainConfig.dataset

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "run.json") -> RunRecord:
        d = dict(d)
        version = _version(d, RUN_VERSION, where)
        model = d.get("model")
        if not isinstance(model, str) or not model:
            raise _fault(where, f"'model' must name a model (rbm, vae, gan, ebm), got {model!r}: not a genlib run")
        origins: dict[str, Any] = {}
        for key, kind in (("forked_from", ForkOrigin), ("uploaded_from", UploadOrigin), ("sweep", SweepMember)):
            if d.get(key) is not None:
                origins[key] = kind.from_dict(d[key], where)
        if version == LEGACY_VERSION and not origins:  # the old "parent" (also accepted from callers' dicts)
            origins = _legacy_parent(d.get("parent"), where)
        pretrained = d.get("pretrained")
        if pretrained is not None and not isinstance(pretrained, dict):
            if pretrained is False:
                pretrained = None
            else:
                raise _fault(where, f"'pretrained' must be an object or null, got {pretrained!r}")
        return cls(model=model, model_config=dict(_take(d, "model_config", where, "dict") or {}),
                   train_config=dict(_take(d, "train_config", where, "dict") or {}),
                   dataset=_take(d, "dataset", where, "str"), id=_take(d, "id", where, "str") or "",
                   created=float(_take(d, "created", where, "num") or 0.0), title=_take(d, "title", where, "str"),
                   pretrained=pretrained, extra=_extra(d, cls.KNOWN), **origins)

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "version": RUN_VERSION, "model": self.model, "model_config": dict(self.model_config),
                "train_config": dict(self.train_config), "dataset": self.resolved_dataset, "id": self.id,
                "created": self.created, "title": self.title,
                "forked_from": self.forked_from.to_dict() if self.forked_from else None,
                "uploaded_from": self.uploaded_from.to_dict() if self.uploaded_from else None,
                "sweep": self.sweep.to_dict() if self.sweep else None, "pretrained": self.pretrained}

    def with_train_config(self, train_config: Mapping[str, Any]) -> RunRecord:
        return replace(self, train_config=dict(train_config))


# ---- state.json ----

@dataclass(frozen=True, kw_only=True)
class StateRecord(_Record):
    """state.json: where a run is (state, progress, speed, last metrics, message/error) and who runs it (pid, host,
    node) with its heartbeat `updated`. The worker rewrites it at every log row and at least every 2 s; the server
    writes it when it queues, resumes or stops a run that has no worker."""

    state: str = "queued"
    step: int = 0
    epoch: int = 0
    images: int = 0
    seconds: float = 0.0
    updated: float = 0.0
    started: float | None = None
    pid: int | None = None
    host: str | None = None  # socket.gethostname() of the process that wrote `pid`: a pid means nothing elsewhere
    node: str | None = None  # an optional cluster node id ($GENLIB_NODE_ID)
    message: str | None = None
    error: str | None = None
    traceback: str | None = None
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    images_per_second: float | None = None
    eta_seconds: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    KNOWN: ClassVar[tuple[str, ...]] = ("version", "state", "step", "epoch", "images", "seconds", "updated",
                                        "started", "pid", "host", "node", "message", "error", "traceback",
                                        "total_steps", "steps_per_epoch", "images_per_second", "eta_seconds",
                                        "metrics")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "state.json") -> StateRecord:
        d = dict(d)
        _version(d, STATE_VERSION, where)
        state = d.get("state", "queued")
        if state not in STATES:
            raise _fault(where, f"'state' must be one of {', '.join(STATES)}, got {state!r}")
        pid = d.get("pid")
        if pid is not None and not (_is_int(pid) and pid > 0):
            raise _fault(where, f"'pid' must be a positive whole number or null, got {pid!r}")
        return cls(state=state, step=_take(d, "step", where, "int", 0, optional=False),
                   epoch=_take(d, "epoch", where, "int", 0, optional=False),
                   images=_take(d, "images", where, "int", 0, optional=False),
                   seconds=float(_take(d, "seconds", where, "num", 0.0, optional=False)),
                   updated=float(_take(d, "updated", where, "num", 0.0, optional=False)),
                   started=_take(d, "started", where, "num"), pid=pid, host=_take(d, "host", where, "str"),
                   node=_take(d, "node", where, "str"), message=_take(d, "message", where, "str"),
                   error=_take(d, "error", where, "str"), traceback=_take(d, "traceback", where, "str"),
                   total_steps=_take(d, "total_steps", where, "int"),
                   steps_per_epoch=_take(d, "steps_per_epoch", where, "int"),
                   images_per_second=_take(d, "images_per_second", where, "num"),
                   eta_seconds=_take(d, "eta_seconds", where, "num"),
                   metrics=dict(_take(d, "metrics", where, "dict") or {}), extra=_extra(d, cls.KNOWN))

    def to_dict(self) -> dict[str, Any]:
        out = {**self.extra, "version": STATE_VERSION}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "version")})
        return out


def update_state(path: Path | str, **changes: Any) -> StateRecord:
    """Merge `changes` into state.json under its lock, stamp the heartbeat, save atomically; returns the new record.
    A missing file starts from a fresh record; the folder is never created."""
    path = Path(path)
    with file_lock(path):
        try:
            current = StateRecord.load(path).to_dict()
        except FileNotFoundError:
            current = {}
        current.update(changes)
        current["updated"] = time.time()
        record = StateRecord.from_dict(current, where=f"{path} (update {sorted(changes)})")
        record.save(path)
    return record


# ---- control.json ----

@dataclass(frozen=True, kw_only=True)
class ControlRecord(_Record):
    """control.json: what the server asks of a run's worker: the command (run, pause, stop), the live knobs (lr, the
    VAE's beta, the RBM's k; flat keys on disk), and `seq`, bumped by every request. Only the server (and the CLI
    before it trains) writes it, always through `update_control`; the worker only reads it."""

    command: str = "run"
    seq: int = 0
    knobs: dict[str, Any] = field(default_factory=dict)
    version: int = CONTROL_VERSION

    RESERVED: ClassVar[tuple[str, ...]] = ("version", "command", "seq")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "control.json") -> ControlRecord:
        d = dict(d)
        _version(d, CONTROL_VERSION, where)
        command = d.get("command", "run")
        if command not in COMMANDS:
            raise _fault(where, f"'command' must be one of {', '.join(COMMANDS)}, got {command!r}")
        knobs = {k: v for k, v in d.items() if k not in cls.RESERVED}
        for k, v in knobs.items():
            _take(knobs, k, where, "scalar")
        return cls(command=command, seq=_take(d, "seq", where, "int", 0, optional=False), knobs=knobs)

    def to_dict(self) -> dict[str, Any]:
        return {**self.knobs, "version": CONTROL_VERSION, "command": self.command, "seq": self.seq}


def update_control(path: Path | str, **changes: Any) -> ControlRecord:
    """Apply a request (command and/or knobs) to control.json under its lock and bump `seq`: two tabs that press
    Stop and change a knob at the same moment both land, in some order; neither is lost."""
    path = Path(path)
    with file_lock(path):
        try:
            current = ControlRecord.load(path).to_dict()
        except FileNotFoundError:
            current = {}
        current.update(changes)
        current["seq"] = int(current.get("seq", 0)) + 1
        record = ControlRecord.from_dict(current, where=f"{path} (request {sorted(changes)})")
        record.save(path)
    return record


# ---- the quality records: quality.jsonl rows, quality.json, quality-status.json ----

@dataclass(frozen=True, kw_only=True)
class QualityRecord(_Record):
    """One evaluation (a row of quality.jsonl; the last final/full one is also quality.json): its kind, the step it
    evaluated, when and how long, its settings, and the figures or the error. Written by genlib.quality.records."""

    kind: str
    step: int
    t: float = 0.0
    seconds: float = 0.0
    settings: dict[str, Any] | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # checkpoint, cancelled, traceback, ...
    version: int = QUALITY_VERSION

    KNOWN: ClassVar[tuple[str, ...]] = ("version", "kind", "step", "t", "seconds", "settings", "figures", "error")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "quality record") -> QualityRecord:
        d = dict(d)
        _version(d, QUALITY_VERSION, where)
        return cls(kind=_take(d, "kind", where, "str", optional=False),
                   step=_take(d, "step", where, "int", optional=False),
                   t=float(_take(d, "t", where, "num", 0.0, optional=False)),
                   seconds=float(_take(d, "seconds", where, "num", 0.0, optional=False)),
                   settings=_take(d, "settings", where, "dict"),
                   figures=dict(_take(d, "figures", where, "dict") or {}), error=_take(d, "error", where, "str"),
                   extra=_extra(d, cls.KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "version": QUALITY_VERSION, "kind": self.kind, "step": self.step, "t": self.t,
                "seconds": self.seconds, "settings": self.settings, "figures": dict(self.figures),
                "error": self.error}


@dataclass(frozen=True, kw_only=True)
class QualityStatus(_Record):
    """quality-status.json: the progress of the running final/full evaluation (state, fraction, message) and who
    runs it (pid, host) with its heartbeat `updated`. Written by that evaluation only."""

    state: str
    kind: str = "full"
    fraction: float = 0.0
    message: str = ""
    pid: int | None = None
    host: str | None = None
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = QUALITY_VERSION

    KNOWN: ClassVar[tuple[str, ...]] = ("version", "state", "kind", "fraction", "message", "pid", "host", "updated")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "quality-status.json") -> QualityStatus:
        d = dict(d)
        _version(d, QUALITY_VERSION, where)
        state = d.get("state")
        if state not in QUALITY_STATES:
            raise _fault(where, f"'state' must be one of {', '.join(QUALITY_STATES)}, got {state!r}")
        pid = d.get("pid")
        if pid is not None and not (_is_int(pid) and pid > 0):
            raise _fault(where, f"'pid' must be a positive whole number or null, got {pid!r}")
        return cls(state=state, kind=_take(d, "kind", where, "str", "full", optional=False),
                   fraction=float(_take(d, "fraction", where, "num", 0.0, optional=False)),
                   message=_take(d, "message", where, "str", "") or "", pid=pid, host=_take(d, "host", where, "str"),
                   updated=float(_take(d, "updated", where, "num", 0.0, optional=False)), extra=_extra(d, cls.KNOWN))

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "version": QUALITY_VERSION, "state": self.state, "kind": self.kind,
                "fraction": self.fraction, "message": self.message, "pid": self.pid, "host": self.host,
                "updated": self.updated}
