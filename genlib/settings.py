"""Every environment variable that genlib and the dashboard read, parsed and checked in this one module (the table a
user reads is docs/settings.md; tests/test_settings.py keeps the two in step).

`current()` reads os.environ anew on each call, because tests and the dashboard set variables while a process runs
(the dashboard's worker threads, a test's runs folder); parsing a dozen strings costs microseconds. A bad value
raises SettingsError naming the variable, what it accepts and what it got, never a bare int() traceback.
The module imports nothing heavy (no torch), so the CLI and the dashboard read it before anything else loads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_ROOT_ENV = "GENLIB_DATA_ROOT"
RUNS_DIR_ENV = "GENLIB_RUNS_DIR"
CACHE_ENV = "GENLIB_CACHE"
PRETRAINED_ENV = "GENLIB_PRETRAINED_DIR"
TEACHER_TOKEN_ENV = "GENLIB_TEACHER_TOKEN"
JOB_BACKEND_ENV = "GENLIB_JOB_BACKEND"
MAX_JOBS_ENV = "GENLIB_MAX_JOBS"
WORKER_NICE_ENV = "GENLIB_WORKER_NICE"
WORKER_THREADS_ENV = "GENLIB_WORKER_THREADS"
SERVER_THREADS_ENV = "GENLIB_SERVER_THREADS"
STANDBY_ENV = "GENLIB_STANDBY_WORKER"
FUSED_CD_ENV = "GENLIB_FUSED_CD"
COMPILER_ENV = "CC"
NODE_ENV = "GENLIB_NODE_ID"
RAY_ADDRESS_ENV = "GENLIB_RAY_ADDRESS"
RAY_TOKEN_ENV = "GENLIB_RAY_TOKEN"

REPO_PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"  # the runs shipped with the repository
JOB_BACKENDS = ("process", "thread", "ray")  # genlib.jobs.launchers.BACKENDS
OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")
PRETRAINED_OFF = ("none", "0", "off", "false")  # and the empty string: install no pretrained runs


class SettingsError(ValueError):
    """An environment variable holds a value genlib refuses; the message names it and says what it accepts."""


# ---- parsers: (variable name, raw string stripped) -> value ----

def _path(name: str, raw: str) -> Path:
    if "\x00" in raw:
        raise SettingsError(f"${name} must be a folder path, got {raw!r}")
    return Path(raw).expanduser()


def _whole(lo: int, hi: int, what: str) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        if not raw.isdigit() or not lo <= int(raw) <= hi:
            raise SettingsError(f"${name} must be a whole number {what} from {lo} to {hi}, got {raw!r}")
        return int(raw)
    return parse


WORKER_EVALUATIONS = ("none", "cheap", "final")  # genlib.jobs.worker.EVALUATE_CHOICES


def _flag(name: str, raw: str) -> bool:
    low = raw.lower()
    if low not in ON + OFF:
        raise SettingsError(f"${name} must be one of {', '.join(ON + OFF)}, got {raw!r}")
    return low in ON


def _backend(name: str, raw: str) -> str:
    if raw not in JOB_BACKENDS:
        raise SettingsError(f"${name} must be one of {', '.join(JOB_BACKENDS)}, got {raw!r}")
    return raw


def _pretrained(name: str, raw: str) -> Path | None:
    return None if raw.lower() in PRETRAINED_OFF + ("",) else _path(name, raw)


def _evaluate(name: str, raw: str) -> str:
    if raw not in WORKER_EVALUATIONS:
        raise SettingsError(f"${name} must be one of {', '.join(WORKER_EVALUATIONS)}, got {raw!r}")
    return raw


def _text(name: str, raw: str) -> str:
    return raw


def _share(name: str, raw: str) -> float:
    """A non-negative number of CPUs or GPUs (a share of one: 0.25)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 1024):
        raise SettingsError(f"${name} must be a number from 0 to 1024, got {raw!r}")
    return value


@dataclass(frozen=True)
class Variable:
    """One environment variable: the Settings field it fills, how it is parsed, its default in words and its use."""

    name: str
    field: str
    parse: Callable[[str, str], Any]
    default: str
    meaning: str
    empty_counts: bool = False  # a variable set to "" is parsed (pretrained: none), else it counts as unset
    exact: bool = False  # parsed as set, spaces included (a secret is compared byte for byte)
    fallback: str | None = None  # another program's name for the same thing, read when `name` is unset (Ray's)


VARIABLES: tuple[Variable, ...] = (
    Variable(DATA_ROOT_ENV, "data_root", _path, "./data",
             "Folder of the datasets (torchvision's MNIST/FashionMNIST layout, the Ising cache)."),
    Variable(RUNS_DIR_ENV, "runs_dir", _path, "./runs", "Folder of the run folders (the dashboard's and the CLI's)."),
    Variable(CACHE_ENV, "cache_dir", _path, "~/.cache/genlib",
             "Cache of the quality classifier and the compiled RBM kernels."),
    Variable(PRETRAINED_ENV, "pretrained_dir", _pretrained, "the repository's pretrained/",
             "Folder of pretrained runs copied into the runs folder at server start; empty, none, 0, off or false "
             "installs none.", empty_counts=True),
    Variable(TEACHER_TOKEN_ENV, "teacher_token", _text, "unset (everyone may start and stop runs)",
             "Teacher mode: actions that write to the runs folder or start a process need this token.", exact=True),
    Variable(JOB_BACKEND_ENV, "job_backend", _backend, "process",
             "How the dashboard runs jobs: worker processes, threads of the server (tests), or Ray jobs on a cluster."),
    Variable(MAX_JOBS_ENV, "max_jobs", _whole(1, 1024, "of jobs"), "one per two CPU cores; 4 on a GPU",
             "Concurrent training jobs per device."),
    Variable(WORKER_NICE_ENV, "worker_nice", _whole(0, 19, "(a niceness)"), "10",
             "CPU priority of the dashboard's worker processes below the server's."),
    Variable(WORKER_THREADS_ENV, "worker_threads", _whole(0, 256, "of threads"),
             "unset: PyTorch's default (the dashboard sets 1 on a CPU of at most two cores)",
             "Torch threads of a job whose config leaves `threads` unset; 0 keeps PyTorch's default."),
    Variable(SERVER_THREADS_ENV, "server_threads", _whole(0, 256, "of threads"), "1",
             "Torch threads of the dashboard server itself with the process backend; 0 keeps PyTorch's default."),
    Variable("GENLIB_WORKER_EVALUATE", "worker_evaluate", _evaluate, "final",
             "What a dashboard job evaluates after training: none; cheap (seconds); final (CHEAP figures while it "
             "trains, the papers' figures at the end: minutes). Test suites set cheap."),
    Variable(STANDBY_ENV, "standby_worker", _flag, "1",
             "Keep one worker process started ahead of time for the next job (0 saves its memory)."),
    Variable(FUSED_CD_ENV, "fused_cd", _flag, "1",
             "Use the RBM's compiled CPU passes where they apply (0: the eager PyTorch step)."),
    Variable("GENLIB_GAN_AHEAD", "gan_ahead", _flag, "1",
             "The GAN explorer computes the grids one slider step ahead of the student (0: each grid when asked)."),
    Variable(NODE_ENV, "node_id", _text, "unset", "A cluster node's id, recorded with a worker's pid and host."),
    Variable(RAY_ADDRESS_ENV, "ray_address", _text, "unset ($RAY_ADDRESS when set)",
             "The Ray cluster's head node dashboard, e.g. http://10.0.0.1:8265, for GENLIB_JOB_BACKEND=ray.",
             fallback="RAY_ADDRESS"),
    Variable(RAY_TOKEN_ENV, "ray_token", _text, "unset ($RAY_AUTH_TOKEN when set)",
             "The Ray cluster's authentication token, sent with every job request.", exact=True,
             fallback="RAY_AUTH_TOKEN"),
    Variable("GENLIB_RAY_PYTHON", "ray_python", _text, "this Python", "The Python on every Ray node (the same path)."),
    Variable("GENLIB_RAY_WORKDIR", "ray_workdir", _path, "the current folder",
             "The checkout on every Ray node (the same path)."),
    Variable("GENLIB_RAY_CPUS_PER_JOB", "ray_cpus_per_job", _share, "1", "CPUs a Ray job asks for."),
    Variable("GENLIB_RAY_GPUS_PER_JOB", "ray_gpus_per_job", _share, "0.25",
             "Share of a GPU a Ray training job on cuda asks for (0.25: four jobs a GPU)."),
    Variable(COMPILER_ENV, "c_compiler", _text, "cc, gcc or clang on PATH",
             "The C compiler that builds the RBM's CPU passes (genlib/sampling/kernels/cd_cpu.c)."),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The process's settings from its environment; each field's variable, default and meaning are in VARIABLES."""

    data_root: Path = Path("data")
    runs_dir: Path = Path("runs")
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "genlib")
    pretrained_dir: Path | None = REPO_PRETRAINED
    teacher_token: str = field(default="", repr=False)  # a secret: never in a log line
    job_backend: str = "process"
    max_jobs: int | None = None  # None: chosen per device (genlib.jobs.manager.default_max_jobs)
    worker_nice: int = 10
    worker_threads: int | None = None  # None (or 0 in the variable): PyTorch's default
    server_threads: int = 1
    worker_evaluate: str = "final"
    standby_worker: bool = True
    fused_cd: bool = True
    gan_ahead: bool = True
    node_id: str | None = None
    ray_address: str | None = None
    ray_token: str | None = field(default=None, repr=False)  # a secret
    ray_python: str | None = None  # None: this process's Python
    ray_workdir: Path | None = None  # None: the current folder
    ray_cpus_per_job: float = 1.0
    ray_gpus_per_job: float = 0.25
    c_compiler: str | None = None  # None: the first of cc, gcc, clang on PATH

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings of `environ`; SettingsError (a ValueError) for the first variable with a bad value."""
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = environ.get(var.name)
            if not raw and var.fallback is not None:  # unset or empty: the other program's variable
                raw = environ.get(var.fallback, raw)
            if raw is None:
                continue
            raw = raw if var.exact else raw.strip()
            if raw or var.empty_counts:
                values[var.field] = var.parse(var.name, raw)
        if values.get("worker_threads") == 0:  # 0 keeps PyTorch's default, as unset does
            values["worker_threads"] = None
        return cls(**values)


def current() -> Settings:
    """The settings of this process's environment now."""
    return Settings.from_environ(os.environ)


def passed_on(names: tuple[str, ...]) -> dict[str, str]:
    """The variables among `names` that are set (and not empty), as set: what a job started on another machine
    needs to see the same folders and threads as one started here."""
    return {name: os.environ[name] for name in names if os.environ.get(name)}
