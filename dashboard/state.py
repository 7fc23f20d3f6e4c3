"""Process-wide objects shared by every browser session (job manager, device, datasets) and cached model loading.

Jobs belong to the server: the manager lives in `st.cache_resource`, runs live on disk, and the page a student
looks at is chosen by the URL's `?run=` parameter, so reloads and other browsers see the same jobs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from genlib.runs.store import Run, RunStore, default_runs_dir
from genlib.settings import current as current_settings



@st.cache_resource(show_spinner=False)
def get_manager():
    """The one JobManager of this server process (worker processes by default; $GENLIB_JOB_BACKEND=thread)."""
    from genlib.jobs.manager import JobManager

    settings = current_settings()
    backend = settings.job_backend
    if backend == "process":
        _limit_server_threads()
        _leave_a_core()
    store = RunStore(default_runs_dir())
    _install_pretrained(store)
    # Workers run at a lower CPU priority than the server (niceness +10, $GENLIB_WORKER_NICE), so a slider move or a
    # chart refresh is served at once and training takes every cycle left over: with it the p95 slider-to-image latency
    # while a job trains fell from 383 to 273 ms on a 2-core CPU (scripts/measure_ui.py; figures in docs/ui.md).
    nice = settings.worker_nice
    # a worker started ahead of time takes the next job: Start training -> first chart point without the worker's
    # imports (genlib.jobs.standby); $GENLIB_STANDBY_WORKER=0 saves its memory (a waiting Python with torch loaded)
    return JobManager(store, backend=backend, worker_nice=nice, standby=settings.standby_worker)


def _install_pretrained(store: RunStore) -> None:
    """Copy the shipped pretrained runs (genlib.runs.pretrained) into the runs folder once per server start, so a fresh
    install opens every model page on a trained model; a read-only runs folder only loses them, never the page."""
    from genlib.runs.pretrained import install

    try:
        install(store)
    except OSError:
        pass


def _leave_a_core() -> None:
    """On a CPU of at most two cores, dashboard jobs train with one torch thread ($GENLIB_WORKER_THREADS, inherited by
    the worker processes; a value already set is kept, 0 keeps PyTorch's default).

    Why: there the server and a browser on the same machine take part of a core while a page streams, and a
    two-thread job whose threads meet at every matmul then waits for whichever one was descheduled: measured with
    scripts/measure_ui.py on a 2-core AMD EPYC, the streamed VAE job trained at a third of its CLI speed.
    """
    from genlib.jobs.worker import WORKER_THREADS_ENV, dashboard_job_threads

    threads = dashboard_job_threads()
    if threads:
        os.environ.setdefault(WORKER_THREADS_ENV, str(threads))


def _limit_server_threads() -> None:
    """Give the server's own torch work (slider decodes) one thread when training runs in worker processes.

    Why: on a 2-core machine a decode that spreads over every core fights the worker for them, and both lose;
    measured in Chromium under a training job, one GAN grid went from 172 ms to 29 ms. $GENLIB_SERVER_THREADS
    overrides it (0 keeps PyTorch's default). The thread backend keeps the default: there the setting is
    process-wide and would slow the training itself.
    """
    import torch

    wanted = current_settings().server_threads
    if wanted > 0:
        torch.set_num_threads(wanted)


def get_store() -> RunStore:
    return get_manager().store


@st.cache_resource(show_spinner=False)
def get_device_info():
    from genlib.devices import describe_device, resolve_device

    return describe_device(resolve_device("auto"))


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def get_dataset(name: str, root: str | None = None):
    """A dataset on the CPU, for test images on the exploration panels (training workers load their own)."""
    from genlib.data import load_dataset

    return load_dataset(name, root=root, device="cpu", download=False)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_model(path: str, mtime_ns: int):
    """Load a model for exploration (CPU, eval mode); keyed by file and mtime so a new snapshot reloads it."""
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path, device="cpu")
    model = model_from_checkpoint(ckpt, device="cpu").eval()
    return model, ckpt.step


def load_run_model(run: Run) -> tuple[Any, int] | None:
    """(model, step) of the run's latest weights, or None when it has none yet. Raises CheckpointError."""
    path = run.latest_weights()
    if path is None:
        return None
    return _load_model(str(path), path.stat().st_mtime_ns)


def run_param_refusal() -> str | None:
    """Why the address's `?run=` was refused (an id that could leave the runs folder, or is not a run id at all), or
    None. The id is checked (genlib.runs.store.check_run_id) before any path is built from it."""
    from genlib.runs.store import check_run_id

    wanted = st.query_params.get("run")
    if not wanted:
        return None
    try:
        check_run_id(wanted)
    except ValueError as e:
        return f"The address asks for a run that was refused: {e} Showing another run instead."
    return None


def selected_run_id(model_name: str) -> str | None:
    """The run this page shows: `?run=` when it names a run of this model, else the newest run of the model trained
    here, else its best pretrained run (genlib.runs.pretrained.best_pretrained) (a refused `?run=` says so on the
    page: run_param_refusal)."""
    from genlib.runs.pretrained import best_pretrained, is_pretrained

    store = get_store()
    wanted = st.query_params.get("run")
    refusal = run_param_refusal()
    if refusal:
        st.warning(refusal, icon=":material/block:")
    elif wanted:
        try:
            run = store.get(wanted)
            if run.info().get("model") == model_name:
                return wanted
        except (ValueError, FileNotFoundError):
            pass
    runs = store.list()
    for run in runs:
        if run.info().get("model") == model_name and not is_pretrained(run):
            return run.id
    best = best_pretrained(runs, model_name)
    return best.id if best is not None else None


def select_run(run_id: str | None) -> None:
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]


# ---- shared, incremental reads for the live views (added for the training panel, the sidebar and the runs page) ----

STATUS_TTL_S = 1.0  # every viewer's sidebar shares one scan of the runs folder per second


@st.cache_data(ttl=STATUS_TTL_S, show_spinner=False, max_entries=1)
def job_statuses() -> list:
    """JobManager.statuses() (every run on disk, newest first), shared by all sessions for STATUS_TTL_S."""
    return get_manager().statuses()


def job_statuses_now() -> list:
    """A fresh scan of the runs folder, for the runs page: there a run that another app server deleted a moment
    ago must not be listed or offered for Resume (job_statuses() may be STATUS_TTL_S old, and the other server's
    delete cannot clear this server's cache). One scan per rerun of that page: a few ms per hundred runs."""
    return get_manager().statuses()


MAX_LOG_ROWS = 20_000  # metric rows a MetricLog keeps per run before it thins the older half of them


class MetricLog:
    """One run's metrics.jsonl as columns, read incrementally: each refresh reads only the bytes appended since the
    last one. A resumed run that re-logs steps it had already logged (it restarted from an older checkpoint) replaces
    them, so curves never fold back. Thread-safe: every session's fragment refreshes the same object."""

    def __init__(self, run: Run) -> None:
        import threading

        self.run = run
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.offset = 0
        self.steps: list[int] = []
        self.columns: dict[str, list[float | None]] = {}
        self.lr_changes: list[tuple[int, float]] = []
        self.marks: list[tuple[int, str, str]] = []  # (step, knob or "fork", label) for the loss chart
        self._fork_changes: set[tuple[int, str, str]] = set()  # (step, knob, value) a fork event already marks
        self.version = 0  # bumped when new rows arrive: a cache key for figures built from this log

    def _append(self, row: dict) -> None:
        step = row.get("step")
        if not isinstance(step, int):
            return
        if row.get("event") in ("knob", "fork"):
            self._add_marks(step, row)
            return
        if self.steps and step <= self.steps[-1]:  # history re-logged after a resume: drop the overlap
            import bisect

            cut = bisect.bisect_left(self.steps, step)
            del self.steps[cut:]
            for col in self.columns.values():
                del col[cut:]
            self.lr_changes = [(s, lr) for s, lr in self.lr_changes if s < step]
            self.marks = [m for m in self.marks if m[0] < step]
        n = len(self.steps)
        self.steps.append(step)
        for k, v in row.items():
            if k in ("step", "t", "event") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            col = self.columns.get(k)
            if col is None:
                col = self.columns[k] = [None] * n
            col.append(float(v))
        for col in self.columns.values():
            if len(col) < n + 1:
                col.append(None)
        if len(self.steps) > MAX_LOG_ROWS:
            self._thin()

    def _thin(self) -> None:
        """Keep the server's copy of a long run bounded (memory, and the cost of each chart rebuild): every other
        one of the older rows goes, the newest quarter stays whole. Charts draw at most 2,000 points anyway."""
        head = len(self.steps) - MAX_LOG_ROWS // 4
        keep = list(range(0, head, 2)) + list(range(head, len(self.steps)))
        self.steps = [self.steps[i] for i in keep]
        for name, col in self.columns.items():
            self.columns[name] = [col[i] for i in keep]

    def _add_marks(self, step: int, row: dict) -> None:
        """Knob events become one mark per changed knob ("lr 1e-04"); a fork event one mark naming its parent and
        change. A knob event that repeats a fork's change at the same step (the fork's worker applying it) is
        dropped."""
        from dashboard.charts import knob_label

        if row["event"] == "fork":
            changed = row.get("changed") or {}
            text = ", ".join(knob_label(k, v[1] if isinstance(v, list) else v) for k, v in changed.items())
            self.marks.append((step, "fork", f"fork of {row.get('parent', '?')}" + (f": {text}" if text else "")))
            self._fork_changes = {(step, k, str(v[1] if isinstance(v, list) else v)) for k, v in changed.items()}
            if "lr" in changed:
                self.lr_changes.append((step, float(changed["lr"][1])))
            return
        for name, value in row.items():
            if name in ("event", "step", "t") or value is None:
                continue
            if (step, name, str(value)) in self._fork_changes:
                continue
            if name == "lr":
                self.lr_changes.append((step, float(value)))
            self.marks.append((step, name, knob_label(name, value)))

    def refresh(self) -> int:
        """Read what was appended since the last call; returns the version (changes when there is new data)."""
        with self._lock:
            try:
                size = self.run.metrics_path.stat().st_size
            except OSError:
                size = 0
            if size < self.offset:  # the file was replaced: start over
                self._reset()
            if size > self.offset:
                rows, self.offset = self.run.metrics(self.offset)
                for row in rows:
                    self._append(row)
                if rows:
                    self.version += 1
            return self.version

    def series(self, names) -> dict[str, tuple[list[int], list[float]]]:
        """{name: (steps, values)} for the named metrics (copies, missing values left out)."""
        with self._lock:
            out = {}
            for name in names:
                col = self.columns.get(name) or []
                pairs = [(s, v) for s, v in zip(self.steps, col) if v is not None]
                out[name] = ([s for s, _ in pairs], [v for _, v in pairs])
            return out

    def last(self) -> dict[str, float]:
        with self._lock:
            return {k: col[-1] for k, col in self.columns.items() if col and col[-1] is not None}


class _MetricLogs:
    """A bounded, thread-safe LRU of MetricLogs by run folder."""

    def __init__(self, max_runs: int = 32) -> None:
        import threading
        from collections import OrderedDict

        self.max_runs = max_runs
        self._logs: "OrderedDict[str, MetricLog]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run: Run) -> MetricLog:
        key = str(run.path)
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = MetricLog(run)
                while len(self._logs) > self.max_runs:
                    self._logs.popitem(last=False)
            else:
                self._logs.move_to_end(key)
            return log

    def forget(self, run_id: str) -> None:
        """Drop the logs of every run folder named `run_id` (a deleted run)."""
        with self._lock:
            for key in [k for k in self._logs if Path(k).name == run_id]:
                del self._logs[key]


@st.cache_resource(show_spinner=False)
def _metric_logs() -> _MetricLogs:
    return _MetricLogs()


def metric_log(run: Run) -> MetricLog:
    """The run's MetricLog, refreshed (reads only new bytes); shared by every session watching the run."""
    log = _metric_logs().get(run)
    log.refresh()
    return log


def forget_run(run_id: str) -> None:
    """Drop cached views of a deleted run."""
    _metric_logs().forget(run_id)
    job_statuses.clear()


@st.cache_resource(show_spinner=False, ttl=600)
def download_possible(host: str = "ossci-datasets.s3.amazonaws.com", timeout: float = 1.5) -> bool:
    """Whether this server can reach torchvision's MNIST mirror (checked at most every 10 minutes, in a helper thread
    so a hanging DNS lookup cannot hold up the page for more than `timeout` seconds)."""
    import socket
    import threading

    result = {"ok": False}

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result["ok"] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, name="genlib-download-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result["ok"]
