"""Where processes' time went under load: each thread's time on a CPU and its time runnable but waiting for one (Linux
/proc/<pid>/task/<tid>/schedstat), summed per group of processes, so a load test can tell a server that is slow
because it waits for a CPU from one that is slow by itself (a lock, the GIL, its own queue)."""

from __future__ import annotations

from pathlib import Path


def thread_times(pid: int) -> dict[int, tuple[int, int]]:
    """{tid: (ns on a CPU, ns runnable and waiting for a CPU)} of process `pid`'s live threads; {} once it is gone."""
    out = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            on_cpu, waiting, _ = (int(v) for v in (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue  # the thread ended between the listing and the read
        out[int(task.name)] = (on_cpu, waiting)
    return out


class SchedTotals:
    """Seconds on a CPU and seconds waiting for one, per named group of processes, since the first `sample`.

    A thread seen for the first time after the first sample counts from its start; one that ends between two samples
    loses what it did since the last one (samples every few seconds make that small)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], tuple[int, int]] = {}
        self._started = False
        self.on_cpu: dict[str, float] = {}
        self.waiting: dict[str, float] = {}

    def sample(self, groups: dict[str, list[int]]) -> None:
        """Add what each group's threads ({group: [pid, ...]}) did since the last call."""
        seen: dict[tuple[int, int], tuple[int, int]] = {}
        for name, pids in groups.items():
            self.on_cpu.setdefault(name, 0.0)
            self.waiting.setdefault(name, 0.0)
            for pid in pids:
                for tid, (run, wait) in thread_times(pid).items():
                    key = (pid, tid)
                    before = self._last.get(key, (run, wait) if not self._started else (0, 0))
                    seen[key] = (run, wait)
                    self.on_cpu[name] += (run - before[0]) / 1e9
                    self.waiting[name] += (wait - before[1]) / 1e9
        # only the threads alive now: Streamlit starts a thread per script run, so the ended ones would pile up, and
        # a thread id the kernel hands out again must count from its new thread's start
        self._last = seen
        self._started = True

    def summary(self, seconds: float) -> str:
        """'server 0.40 cores, waited for a CPU 35% of its runnable time; ...' over `seconds` of wall clock."""
        parts = []
        for name, run in self.on_cpu.items():
            wait = self.waiting[name]
            share = wait / (run + wait) if run + wait > 0 else 0.0
            parts.append(f"{name} {run / max(seconds, 1e-9):.2f} cores, waited for a CPU {share:.0%} of its "
                         f"runnable time ({wait:,.0f} s)")
        return "; ".join(parts)
