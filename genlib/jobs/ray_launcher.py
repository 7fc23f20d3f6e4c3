"""Jobs on a Ray cluster (GENLIB_JOB_BACKEND=ray): each run's training or evaluation is one Ray job, submitted through
Ray's Job Submission API (`ray.job_submission.JobSubmissionClient`, https://docs.ray.io/en/latest/cluster/
running-applications/job-submission/), whose entry point is the same worker as on one machine.

The runs folder is a shared filesystem mounted at the same path on every node, so the worker reads and writes the run
folder exactly as a local one would, and the pages, metric logs, live knobs and forks work unchanged. CPUs and GPUs
are Ray resources (`entrypoint_num_cpus`, `entrypoint_num_gpus`): Ray places the job on a node with room and sets its
CUDA_VISIBLE_DEVICES to the GPU it was given. Ray's job port runs any command for whoever reaches it: the cluster
should run with token authentication (RAY_AUTH_MODE=token, Ray >= 2.52), and this launcher sends the token as
`Authorization: Bearer ...` (docs/cluster.md). Ray is imported only here, only when this backend is chosen.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlib.jobs.launchers import Liveness, check_kind, job_command, last_log_line, log_path
from genlib.runs.ownership import LOCK_NAME
from genlib.runs.store import Run
from genlib.settings import current as current_settings, passed_on

STATUS_EVERY_S = 1.0  # a job's status is asked of the cluster at most this often (the monitor looks twice a second)
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
PASSED_ENV = ("GENLIB_WORKER_THREADS", "GENLIB_RUNS_DIR", "GENLIB_TEST_MNIST_ROOT", "GENLIB_DATA_ROOT")


@dataclass(frozen=True, kw_only=True)
class RaySettings:
    """Where the cluster is and what each job asks of it."""

    address: str  # the head node's dashboard, e.g. http://10.0.0.1:8265 ($GENLIB_RAY_ADDRESS, else $RAY_ADDRESS)
    token: str | None = field(default=None, repr=False)  # $GENLIB_RAY_TOKEN, else $RAY_AUTH_TOKEN
    python: str = sys.executable  # the Python on every node (the same path: one install, or the same venv path)
    workdir: str = field(default_factory=os.getcwd)  # the checkout on every node (the same path)
    nice: int = 10  # the jobs' CPU priority, lower than anything interactive on a node
    cpus_per_job: float = 1.0  # $GENLIB_RAY_CPUS_PER_JOB
    gpus_per_job: float = 0.25  # $GENLIB_RAY_GPUS_PER_JOB: a share of one GPU for a job on cuda (0.25: four a GPU)

    @classmethod
    def from_env(cls, *, python: str | None = None, nice: int = 10) -> RaySettings:
        env = current_settings()  # $GENLIB_RAY_* (docs/settings.md)
        address = env.ray_address
        if not address:
            raise ValueError("GENLIB_JOB_BACKEND=ray needs the cluster's address: set GENLIB_RAY_ADDRESS to the head "
                             "node's dashboard, e.g. http://10.0.0.1:8265 (docs/cluster.md).")
        return cls(address=address, token=env.ray_token, python=env.ray_python or python or sys.executable,
                   workdir=str(env.ray_workdir or os.getcwd()), nice=nice, cpus_per_job=env.ray_cpus_per_job,
                   gpus_per_job=env.ray_gpus_per_job)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class RayJob:
    """A submitted job: its Ray submission id, and the last status the cluster gave (asked at most every second)."""

    submission_id: str
    log: Path
    checked: float = 0.0
    last: Liveness = field(default_factory=lambda: Liveness(alive=True))


def _wants_gpu(run: Run, kind: str) -> bool:
    if kind != "train":
        return False  # evaluations run on the CPU (genlib.quality.records --device cpu)
    device = str((run.info().get("train_config") or {}).get("device", "cpu"))
    return device.startswith("cuda")


class RayLauncher:
    """Submits, watches and stops one Ray job per run; every call is one HTTP request to the head node."""

    name = "ray"

    def __init__(self, settings: RaySettings, client: Any = None) -> None:
        self.settings = settings
        if client is None:
            from ray.job_submission import JobSubmissionClient  # only here: Ray is an optional extra

            client = JobSubmissionClient(settings.address, headers=settings.headers())
        self.client = client

    def start(self, run: Run, kind: str, *, quality: str = "full") -> RayJob:
        check_kind(kind)
        s = self.settings
        log = log_path(run, kind)
        command = shlex.join(job_command(s.python, run.path, kind, nice=s.nice, quality=quality))
        # `exec`: Ray's stop sends SIGTERM to the entry point, which is then the worker itself (a clean stop)
        entrypoint = f"cd {shlex.quote(s.workdir)} && exec {command} >> {shlex.quote(str(log))} 2>&1"
        env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": s.workdir}
        env.update(passed_on(PASSED_ENV))
        submission_id = f"genlib-{run.id}-{kind}-{uuid.uuid4().hex[:8]}"
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env={"env_vars": env},
                                   metadata={"genlib_run": run.id, "genlib_kind": kind},
                                   entrypoint_num_cpus=s.cpus_per_job,
                                   entrypoint_num_gpus=s.gpus_per_job if _wants_gpu(run, kind) else 0)
        except Exception as e:  # noqa: BLE001 - an HTTP, auth or cluster error: this job cannot start, say why
            raise RuntimeError(f"the Ray cluster at {s.address} refused the job: {type(e).__name__}: {e}") from e
        return RayJob(submission_id=submission_id, log=log)

    def status(self, handle: RayJob) -> Liveness:
        now = time.monotonic()
        if not handle.last.alive or now - handle.checked < STATUS_EVERY_S:
            return handle.last
        handle.checked = now
        try:
            info = self.client.get_job_info(handle.submission_id)
        except Exception:  # noqa: BLE001 - the head node unreachable for a moment: the job is not failed for it
            return handle.last
        status = str(getattr(info.status, "value", info.status))
        node = getattr(info, "driver_node_id", None)
        if status not in ENDED:
            handle.last = Liveness(alive=True, node=node)
        else:
            reason = f"the Ray job {handle.submission_id} ended {status}"
            if info.message:
                reason += f": {info.message.strip()[:300]}"
            line = last_log_line(handle.log)
            refused = line is not None and f"which holds {LOCK_NAME}" in line  # genlib.runs.ownership.refusal
            handle.last = Liveness(alive=False, reason=f"{reason} (log: {line})" if line else reason, node=node,
                                   refused=refused)
        return handle.last

    def stop(self, handle: RayJob) -> None:
        """Ray's stop: SIGTERM to the worker (which checkpoints and records 'stopped'), SIGKILL if it lingers."""
        try:
            self.client.stop_job(handle.submission_id)
        except Exception:  # noqa: BLE001 - already ended, or the cluster unreachable: the status will say
            pass

    def tend(self) -> None:
        pass

    def close(self) -> None:
        pass
