"""Nothing lost when two writers meet one run: the CLI refuses a run another process owns (naming it, touching no
file), Resume and Delete wait for a running evaluation, an evaluation never recreates a deleted folder, control.json
and state.json updates racing from two processes lose nothing (a Stop least of all), an uploaded checkpoint with a
damaged training state is refused with the upload's message and never claims a local run as its parent, and a pid
is trusted only on the machine that wrote it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genlib.runs.store import RunStore, this_host
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sleeper():
    """A live process of this machine that is not this one (a worker or a server as another process sees it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_resume(run_path: Path, capsys, *extra: str) -> tuple[int, str]:
    from genlib import cli

    code = cli.main(["train", "--resume", str(run_path), "--quiet", *extra])
    return code, capsys.readouterr().err


# ---- the CLI and a live owner ----

def test_cli_resume_refuses_a_run_a_live_worker_owns_and_touches_nothing(tmp_path, sleeper, capsys):
    run = RunStore(tmp_path).create({"model": "vae", "train_config": {"dataset": "digits"}})
    run.send(command="stop")  # the teacher's Stop, which a resume must not undo
    run.write_state(state="running", pid=sleeper, step=12)  # the live worker, on this host
    (run.path / ".state.json.abc.tmp").write_bytes(b"the worker's half-written file")
    before = fingerprint(run.path)
    code, err = cli_resume(run.path, capsys, "--epochs", "3")
    assert code == 2 and f"pid {sleeper}" in err and this_host() in err and "Traceback" not in err, err
    assert fingerprint(run.path) == before
    assert run.control()["command"] == "stop"


def test_cli_resume_refuses_a_run_a_live_server_queued(tmp_path, sleeper, capsys):
    run = RunStore(tmp_path).create({"model": "vae", "train_config": {"dataset": "digits"}})
    run.write_state(queued_by={"host": this_host(), "pid": sleeper})
    before = fingerprint(run.path)
    code, err = cli_resume(run.path, capsys)
    assert code == 2 and "server that queued it" in err and f"pid {sleeper}" in err, err
    assert fingerprint(run.path) == before


def test_cli_resume_refuses_a_pretrained_run(tmp_path, capsys):
    import shutil

    folder = tmp_path / "pretrained-vae-latent2"
    shutil.copytree(ROOT / "pretrained" / "pretrained-vae-latent2", folder)
    before = fingerprint(folder)
    code, err = cli_resume(folder, capsys, "--epochs", "99")
    assert code == 2 and "pretrained" in err and "Fork it" in err, err
    assert fingerprint(folder) == before


# ---- liveness across machines ----

def test_a_pid_from_another_host_is_not_taken_as_alive(tmp_path, sleeper):
    """The pid in state.json is alive here, but it was written on another machine: there the heartbeat decides."""
    run = RunStore(tmp_path).create({"model": "vae"})
    run.write_state(state="running", pid=sleeper, host="another-machine", node="node-7")
    state = json.loads(run.state_path.read_text())
    assert state["host"] == "another-machine"
    state["updated"] = time.time() - 60  # silent for a minute: past the heartbeat's limit
    run.state_path.write_text(json.dumps(state))
    assert run.effective_state() == "interrupted" and run.owner() is None
    run.write_state(state="running")  # a fresh heartbeat from that machine: alive, whatever the local pid says
    assert run.effective_state() == "running" and run.owner().node == "node-7"
    state = run.state()
    state.update(host=this_host(), updated=time.time() - 60)  # the same pid, written here: the pid is trusted
    run.state_path.write_text(json.dumps(state))
    assert run.effective_state() == "running"


def test_a_worker_records_its_host(tmp_path):
    run = RunStore(tmp_path).create({"model": "vae"})
    run.write_state(state="running", pid=12345)
    assert run.state()["host"] == this_host()


# ---- evaluations ----

def running_evaluation(run, pid: int) -> None:
    from genlib.runs.schema import QualityStatus

    QualityStatus(state="running", kind="full", fraction=0.3, message="AIS", pid=pid, host=this_host(),
                  updated=time.time()).save(run.quality_status_path)


def test_resume_and_delete_refuse_while_an_evaluation_runs(tmp_path, sleeper):
    from genlib.jobs.manager import JobManager

    manager = JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=1)
    try:
        run = manager.store.create({"model": "vae", "train_config": {"dataset": "digits"}})
        run.write_state(state="stopped")
        running_evaluation(run, sleeper)
        for action in (manager.resume, manager.delete):
            with pytest.raises(ValueError, match=f"evaluation .*pid {sleeper}"):
                action(run.id)
        assert run.path.is_dir() and run.state()["state"] == "stopped"
    finally:
        manager.close()


def test_an_evaluation_never_recreates_a_deleted_run_folder(tmp_path):
    from genlib.jobs import admission
    from genlib.quality import records

    store = RunStore(tmp_path)
    run = store.create({"model": "vae"})
    store.delete(run.id)
    records._Status(run, "full").write("running", 0.5, "AIS", force=True)
    with pytest.raises(FileNotFoundError):  # its callers record nothing then: a full disk is handled the same way
        records.save_record(run, records.make_record("full", 3, {"x": 1.0}))
    admission.fail_silent_evaluation(run, "full", "killed")  # the server marking a silent evaluation failed
    with pytest.raises(FileNotFoundError):
        admission.write_evaluation_status(run, "full", "queued", queued=True)
    assert not run.path.exists()


# ---- two tabs at once ----

RACER = textwrap.dedent("""
    import sys
    from genlib.runs.store import Run
    run, who, n = Run(__import__("pathlib").Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        if who == "a":
            run.send(lr=0.001 * (i + 1))
            run.write_state(a=i)
        else:
            if i == n // 2:
                run.send(command="stop")
            else:
                run.send(beta=float(i))
            run.write_state(b=i)
""")


def test_control_and_state_updates_from_two_processes_lose_nothing(tmp_path):
    """Two processes (two tabs' server threads, or a server and a worker) update the same files 60 times each; one
    of the 120 control requests is a Stop. Every request counts (seq) and the Stop stands; each writer's last state
    field survives the other's writes."""
    run = RunStore(tmp_path).create({"model": "vae"})
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(run.path), who, str(n)], cwd=ROOT)
             for who in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    control, state = run.control(), run.state()
    assert control["seq"] == 2 * n, control
    assert control["command"] == "stop" and control["lr"] == pytest.approx(0.001 * n)
    assert state["a"] == n - 1 and state["b"] == n - 1, state


def test_a_stop_from_one_thread_is_never_lost_to_knob_changes_from_another(tmp_path):
    import threading

    run = RunStore(tmp_path).create({"model": "vae"})
    run.send(command="run")
    start = threading.Barrier(2)

    def knobs() -> None:
        start.wait()
        for i in range(40):
            run.send(lr=0.001 * (i + 1))

    def stop() -> None:
        start.wait()
        run.send(command="stop")

    threads = [threading.Thread(target=knobs), threading.Thread(target=stop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert run.control()["command"] == "stop" and run.control()["seq"] == 42


# ---- uploads ----

def upload_bytes(training_state_json: str | None = None, run_id: str = "") -> bytes:
    """A genlib VAE checkpoint, optionally with its training state's header replaced by `training_state_json`."""
    import dataclasses

    from safetensors.torch import load, save

    from genlib.models import build_model
    from genlib.runs.checkpoints import checkpoint_bytes
    from genlib.training import TrainConfig

    model = build_model("vae", {"hidden": 16, "latent": 2})
    model.configure_training(lr=1e-3)
    tc = dataclasses.asdict(TrainConfig(dataset="digits", epochs=1, batch_size=50, log_every=2, n_samples=4))
    data = checkpoint_bytes(model, train_config=tc, progress={"step": 7, "epoch": 0, "images": 350},
                            extra={"run_id": run_id})
    if training_state_json is None:
        return data
    n = int.from_bytes(data[:8], "little")
    meta = dict(json.loads(data[8:8 + n])["__metadata__"], training_state=training_state_json)
    return save(load(data), metadata=meta)


DAMAGED_STATES = {
    "deep": "[" * 100_000 + "]" * 100_000,  # json.loads itself gives up (RecursionError)
    "nested": json.dumps(__import__("functools").reduce(lambda acc, _: [acc], range(200), 0)),
    "not-pairs": json.dumps({"__dict__": 5}),
    "bad-pair": json.dumps({"__dict__": [["adam", 1, 2]]}),
    "tensor-key": json.dumps({"__dict__": [["adam", {"__tensor__": ["x"]}]]}),
    "a-list": json.dumps([1, 2, 3]),
    "wrong-optimiser": json.dumps({"__dict__": [["adam", {"__dict__": [["state", 5], ["param_groups", 7]]}]]}),
}


@pytest.mark.parametrize("name", sorted(DAMAGED_STATES))
def test_an_upload_with_a_damaged_training_state_gets_the_uploads_message(tmp_path, name):
    from genlib.runs.checkpoints import CheckpointError
    from genlib.runs.store import import_checkpoint

    store = RunStore(tmp_path)
    with pytest.raises(CheckpointError, match="'mine.safetensors'"):
        import_checkpoint(store, upload_bytes(DAMAGED_STATES[name]), filename="mine.safetensors")
    assert store.list() == []


def test_an_upload_never_claims_to_be_a_branch_of_a_local_run(tmp_path):
    from genlib.runs.forks import family
    from genlib.runs.store import import_checkpoint

    store = RunStore(tmp_path)
    local = store.create({"model": "vae", "train_config": {"dataset": "digits"}})
    uploaded = import_checkpoint(store, upload_bytes(run_id=local.id), filename="mine.safetensors")
    record = uploaded.record()
    assert record.forked_from is None and record.uploaded_from.claimed_run_id == local.id
    assert [r.id for r in family(store, uploaded)] == [uploaded.id]
    assert [r.id for r in family(store, local)] == [local.id]


def test_the_runs_page_says_why_resume_and_delete_wait_for_an_evaluation(manager, sleeper):
    from streamlit.testing.v1 import AppTest

    from conftest import APP

    run = manager.store.create({"model": "vae", "train_config": {"dataset": "digits"}})
    run.write_state(state="stopped")
    running_evaluation(run, sleeper)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run.id
    at.switch_page("app_pages/runs.py").run()
    at.button(key="resume-run").click().run()
    assert any("Could not resume" in e.value and f"pid {sleeper}" in e.value for e in at.error), at.error
    at.checkbox(key=f"confirm-delete-{run.id}").check().run()
    at.button(key="delete-run").click().run()
    assert any("Not deleted" in e.value and "evaluation" in e.value for e in at.error), at.error
    assert not at.exception and run.path.is_dir() and run.state()["state"] == "stopped"


# ---- one owner per run folder: two workers meet one run ----

WORKER_ENV = dict(os.environ, GENLIB_WORKER_EVALUATE="none", PYTHONUNBUFFERED="1")


def tiny_run(root: Path, *, command: str) -> "Run":
    """A 2-epoch VAE on the offline digits (30 steps); `command` "pause" makes the worker that trains it hold it,
    paused at its first control read, until the test lets it go on."""
    import dataclasses

    from genlib.training import TrainConfig

    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=100, log_every=5, device="cpu", n_samples=16,
                      snapshot_every_s=1000.0, live_every_s=1000.0, threads=1)
    run = RunStore(root).create({"model": "vae", "model_config": {"hidden": 32, "latent": 2},
                                 "train_config": dataclasses.asdict(cfg), "dataset": "digits"})
    run.send(command=command)
    return run


def start_worker(run) -> subprocess.Popen:
    """`python -m genlib worker RUN_DIR`, as every launcher of the server starts it (the standby runs the same)."""
    return subprocess.Popen([sys.executable, "-m", "genlib", "worker", str(run.path)], cwd=ROOT, env=WORKER_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_writer(run, pid: int) -> None:
    """state.json names `pid` as the worker that finished the run, and metrics.jsonl holds each logged step once, in
    order: two workers on one folder would log the same steps twice."""
    state = run.state()
    assert state["state"] == "finished" and state["pid"] == pid and state["step"] == 30, state
    steps = [row["step"] for row in run.metrics()[0] if "event" not in row]
    assert steps == sorted(set(steps)) and steps[-1] == 30, steps


def test_two_workers_started_at_once_on_one_run_folder_one_trains_the_other_refuses(tmp_path):
    run = tiny_run(tmp_path, command="pause")  # whichever trains holds the run, paused, until the other has ended
    procs = [start_worker(run) for _ in range(2)]
    try:
        wait_for(lambda: any(p.poll() is not None for p in procs), timeout=180, what="one of the two workers ending")
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        out, err = loser.communicate(timeout=60)
        assert loser.returncode != 0 and "Traceback" not in err, (loser.returncode, err)
        assert f"pid {winner.pid} on host {this_host()}" in err and "owner.lock" in err, err
        from genlib.runs.ownership import OWNED_EXIT  # the code the launchers read as "refused, nothing written"

        assert loser.returncode == OWNED_EXIT
        assert winner.poll() is None
        wait_for(lambda: run.state().get("state") == "paused", timeout=180, what="the training worker pausing")
        run.send(command="run")
        out, err = winner.communicate(timeout=300)
        assert winner.returncode == 0 and json.loads(out.splitlines()[-1])["state"] == "finished", err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert_one_writer(run, winner.pid)


def test_a_server_worker_starting_between_the_clis_check_and_its_training_makes_no_second_writer(
        tmp_path, monkeypatch, capsys):
    """The race of `train --resume`: the CLI's checks pass (nobody owns the run), then the dashboard's worker starts
    on the same folder before the CLI trains. One of them trains; the other refuses, naming it."""
    from genlib import cli

    run = tiny_run(tmp_path, command="run")
    run.write_state(state="stopped")
    real, server = cli.claim_for_resume, {}

    def claim_then_a_server_worker_starts(r):
        claimed = real(r)
        proc = start_worker(run)
        server["out"], server["err"] = proc.communicate(timeout=300)
        server["code"] = proc.returncode
        return claimed

    monkeypatch.setattr(cli, "claim_for_resume", claim_then_a_server_worker_starts)
    code = cli.main(["train", "--resume", str(run.path), "--quiet", "--evaluate", "none"])
    out, err = capsys.readouterr()
    assert server["code"] != 0 and f"pid {os.getpid()}" in server["err"], server
    assert "python -m genlib train" in server["err"], server["err"]
    assert code == 0 and json.loads(out.splitlines()[-1])["state"] == "finished", err
    assert_one_writer(run, os.getpid())


def test_a_killed_worker_leaves_a_lock_the_next_worker_takes(tmp_path):
    run = tiny_run(tmp_path, command="pause")
    first = start_worker(run)
    try:
        wait_for(lambda: run.state().get("state") == "paused", timeout=180, what="the first worker pausing")
        owner = run.owner()
        assert owner.pid == first.pid and "owner.lock" in run.owner_lock_path.name
        assert run.lock_holder() == owner  # the lock names it, whatever state.json says
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock file stays
        first.communicate()
    assert first.returncode == -9 and run.owner_lock_path.exists()
    assert run.lock_holder() is None and run.owner() is None  # the kernel dropped a dead process's flock
    run.send(command="run")
    second = start_worker(run)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0 and json.loads(out.splitlines()[-1])["state"] == "finished", err
    assert run.state()["pid"] == second.pid and run.state()["step"] == 30


def test_the_server_shows_the_owners_state_when_its_worker_is_refused(tmp_path, monkeypatch):
    """The server's Resume passed its checks, then the CLI took the run before the server's worker started: the
    refused worker writes nothing, and the run shows the CLI's training, not a failure."""
    from genlib.jobs.manager import JobManager
    from genlib.runs import ownership

    manager = JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=1)
    held: list = []
    try:
        run = tiny_run(manager.store.root, command="run")
        run.write_state(state="stopped")
        start = manager.launcher.start

        def the_cli_takes_it_first(r, kind, **kw):
            held.append(ownership.take(r.path, what="a foreground training (python -m genlib train)"))
            r.write_state(state="running", pid=os.getpid(), message="the CLI trains it")
            return start(r, kind, **kw)

        monkeypatch.setattr(manager.launcher, "start", the_cli_takes_it_first)
        manager.resume(run.id)
        wait_for(lambda: run.id not in manager._jobs, timeout=60, what="the refused worker being reaped")
        status = manager.status(run.id)
        assert status.state == "running" and status.error is None and status.message == "the CLI trains it", status
        with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
            manager.resume(run.id)  # while the CLI holds it
        with pytest.raises(ValueError, match="owner.lock"):
            manager.store.delete(run.id)
        assert run.path.is_dir() and not run.metrics()[0]
    finally:
        for lock in held:
            lock.release()
        manager.close()
    manager.store.delete(run.id)  # once the owner is gone
    assert not run.path.exists()
