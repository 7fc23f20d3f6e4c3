"""A standby worker: a training process started ahead of time, its imports done, that waits for one run folder on
stdin and trains it, so that a job's first chart point comes without a Python start-up (a pre-forked worker, as
web servers keep them; the imports were 5 s of the 6.5 s from Start training to the first point on a 2-core CPU).

JobManager (process backend) holds at most one (`Standby`); `python -m genlib standby --nice N` is the process.
It reads one line, the run folder's path, points its stdout and stderr at the run's log, and runs genlib.jobs.worker's
`run_job` exactly as `python -m genlib worker` would; an end of input (the server went away) ends it quietly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

START_DELAY_S = 5.0  # after the manager starts or a standby is used: the page and the new job get the CPU first
MAX_UNEXPECTED_EXITS = 3  # a standby that keeps dying (a broken install) is given up on; workers start fresh


def warm_imports() -> None:
    """What a job would otherwise import after its start: torch, the models and the worker, and torch._dynamo,
    which the first torch.optim optimizer imports when it is built (2.2 s on the course machine)."""
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    import genlib.models  # noqa: F401
    import genlib.jobs.worker  # noqa: F401


def serve(stdin: IO[str], nice: int = 0) -> int:
    """The standby process: lower its priority, warm up, wait for a run folder, train it; returns the exit code."""
    from genlib.jobs.priority import lower_priority

    lowered = lower_priority(nice)  # first: its imports (seconds of CPU) must not compete with the server or a job
    from genlib.devices import flush_denormals_in_process

    flush_denormals_in_process()  # before torch's thread pool starts, as `python -m genlib worker` does
    warm_imports()
    line = stdin.readline()
    if not line.strip():
        return 0  # the manager closed our input without a job: the server stopped
    from genlib.runs.store import Run
    from genlib.jobs.worker import run_and_report

    run = Run(Path(line.strip()))
    log = os.open(run.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)  # from here on, what the job prints goes where a fresh worker's would: the run's log
    os.dup2(log, 2)
    os.close(log)
    if lowered:  # what a fresh worker's log says
        print("; ".join(lowered), flush=True)
    return run_and_report(run)


class Standby:
    """At most one waiting worker process, for a JobManager to hand runs to; not thread-safe (the manager locks)."""

    def __init__(self, python: str, nice: int, delay_s: float | None = None) -> None:
        self.python, self.nice = python, nice
        self.delay_s = START_DELAY_S if delay_s is None else delay_s
        self.proc: subprocess.Popen | None = None
        self.not_before = time.monotonic() + self.delay_s
        self.unexpected_exits = 0

    @property
    def given_up(self) -> bool:
        return self.unexpected_exits >= MAX_UNEXPECTED_EXITS

    def tend(self) -> None:
        """Start a standby when none waits and the delay has passed; count the ones that died waiting."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
            self._lost_one()
        if self.proc is None and not self.given_up and time.monotonic() >= self.not_before:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            try:  # its own session, as workers have: a job it takes outlives the server like any other worker
                self.proc = subprocess.Popen([self.python, "-m", "genlib", "standby", "--nice", str(self.nice)],
                                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, env=env, cwd=os.getcwd(),
                                             start_new_session=True, text=True)
            except OSError:  # no process to be had now: counted like a standby that died
                self._lost_one()

    def _lost_one(self) -> None:
        """A standby died waiting, or none could be started: count it and wait before the next try."""
        self.unexpected_exits += 1
        self.not_before = time.monotonic() + self.delay_s

    def take(self, run_path: Path) -> Any:
        """Hand `run_path` to the waiting process and return it (a Popen), or None when none waits."""
        proc, self.proc = self.proc, None
        self.not_before = time.monotonic() + self.delay_s
        if proc is None or proc.poll() is not None:
            return None
        try:
            proc.stdin.write(f"{run_path}\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError):  # it died between the check and the write
            proc.kill()
            return None
        return proc

    def close(self) -> None:
        """End a waiting process (closing its input ends it; a kill if it does not go)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
