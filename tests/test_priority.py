"""genlib.jobs.priority: a worker's niceness holds against the server where Linux shares the CPU between sessions
first (autogroup), and a worker run by hand never lowers its terminal's session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlib.jobs import priority
from genlib.jobs.priority import autogroup_nice, lower_priority

HAS_AUTOGROUP = autogroup_nice() is not None
CHILD = ("import json, os; from genlib.jobs.priority import lower_priority, autogroup_nice; "
         "done = lower_priority({n}); print(json.dumps([done, os.nice(0), autogroup_nice()]))")


def run_child(n: int, *, new_session: bool) -> tuple[list[str], int, int | None]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(n=n)], capture_output=True, text=True, check=True,
                         start_new_session=new_session, cwd=Path(__file__).resolve().parents[1], timeout=120)
    done, nice, group = json.loads(out.stdout)
    return done, nice, group


def test_an_increment_outside_0_to_19_is_refused_and_0_changes_nothing():
    with pytest.raises(ValueError, match="0..19"):
        lower_priority(20)
    with pytest.raises(ValueError, match="0..19"):
        lower_priority(-1)
    before = os.nice(0)
    assert lower_priority(0) == [] and os.nice(0) == before


@pytest.mark.skipif(not HAS_AUTOGROUP, reason="this kernel has no autogroup (/proc/self/autogroup)")
def test_a_session_leader_lowers_its_session_group_as_well_as_itself():
    done, nice, group = run_child(7, new_session=True)
    assert nice == min(os.nice(0) + 7, 19)
    assert group == 7 and done == [f"nice {nice}", "session group nice 7"]


@pytest.mark.skipif(not HAS_AUTOGROUP, reason="this kernel has no autogroup (/proc/self/autogroup)")
def test_a_worker_in_the_callers_session_leaves_that_session_group_alone():
    """Run by hand from a terminal (no session of its own), a worker must not lower the shell's and the server's
    session: only its own nice changes."""
    ours = autogroup_nice()
    done, nice, group = run_child(7, new_session=False)
    assert nice == min(os.nice(0) + 7, 19) and done == [f"nice {nice}"]
    assert group == ours == autogroup_nice()


class FakeAutogroup:
    """/proc/self/autogroup that refuses `busy` writes with EAGAIN (the kernel's ten-a-second limit) first."""

    def __init__(self, busy: int) -> None:
        self.nice, self.busy, self.writes = 0, busy, 0

    def read_text(self) -> str:
        return f"/autogroup-42 nice {self.nice}\n"

    def write_text(self, text: str) -> None:
        self.writes += 1
        if self.writes <= self.busy:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.nice = int(text)


def test_the_kernels_rate_limit_is_waited_out_and_a_lasting_refusal_raises(monkeypatch):
    monkeypatch.setattr(os, "nice", lambda inc: 10)  # this test process keeps its own priority
    monkeypatch.setattr(os, "getsid", lambda pid: os.getpid())  # as a session leader
    monkeypatch.setattr(priority, "_RETRY_S", 0.0)
    group = FakeAutogroup(busy=3)
    assert lower_priority(10, autogroup=group) == ["nice 10", "session group nice 10"]
    assert group.writes == 4 and group.nice == 10
    stuck = FakeAutogroup(busy=10**6)
    with pytest.raises(BlockingIOError):
        lower_priority(10, autogroup=stuck)
    assert stuck.writes == priority._RETRIES


def test_no_autogroup_or_an_unreadable_one_means_nice_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "nice", lambda inc: 5)
    assert autogroup_nice(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("something else\n")
    assert autogroup_nice(tmp_path / "odd") is None
    assert lower_priority(5, autogroup=tmp_path / "missing") == ["nice 5"]
