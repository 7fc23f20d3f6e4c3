"""scripts/cpu_wait.py: per-role CPU time and run-queue wait from /proc's schedstat, as the load test reports them."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from cpu_wait import SchedTotals, thread_times  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir(), reason="needs Linux /proc")


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_cpu_a_group_used_is_counted_from_the_first_sample_new_threads_included():
    totals = SchedTotals()
    totals.sample({"me": [os.getpid()], "gone": [2**22 + 12345]})  # a pid that does not exist counts nothing
    before = time.process_time()
    spun, release = threading.Event(), threading.Event()

    def born_later() -> None:  # a thread born after the first sample: counted from its start
        spin(0.2)
        spun.set()
        release.wait(30)

    worker = threading.Thread(target=born_later)
    worker.start()
    spin(0.3)
    assert spun.wait(30)
    totals.sample({"me": [os.getpid()], "gone": [2**22 + 12345]})  # while it lives: a thread that ended is lost
    tid = worker.native_id
    release.set()
    worker.join()
    totals.sample({"me": [os.getpid()], "gone": [2**22 + 12345]})  # an ended thread is forgotten, not kept forever
    assert (os.getpid(), tid) not in totals._last and (os.getpid(), threading.get_native_id()) in totals._last
    used = time.process_time() - before  # the kernel's own count for the whole process
    assert totals.on_cpu["me"] == pytest.approx(used, rel=0.25)
    assert totals.on_cpu["gone"] == 0 and totals.waiting["gone"] == 0
    assert totals.waiting["me"] >= 0
    text = totals.summary(1.0)
    assert text.startswith("me ") and "waited for a CPU" in text and "; gone 0.00 cores" in text


def test_thread_times_lists_this_process_threads():
    times = thread_times(os.getpid())
    assert threading.get_native_id() in times and all(run >= 0 and wait >= 0 for run, wait in times.values())
    assert thread_times(2**22 + 12345) == {}
