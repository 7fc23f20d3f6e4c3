"""Background work's CPU priority: `os.nice` plus, where Linux groups processes by session (CONFIG_SCHED_AUTOGROUP,
on by default in Debian's and Ubuntu's kernels), the same niceness for the worker's own session group.

Why both: with autogroup on, the scheduler first shares the CPU fairly between sessions and only then applies each
process's nice inside its session (sched(7), "The autogroup feature"). Workers start in sessions of their own (so
a server restart does not take them down), so a worker at nice 19 still got half a core against a busy server at
nice 0 -- measured on the course machine: two spinning processes on one core, 0.50 / 0.50 with `os.nice(19)` alone,
0.01 / 0.99 with the session's niceness set too. Writing /proc/self/autogroup changes the whole session, so it is
done only by a session leader (a process started with `start_new_session=True`), never by a worker run by hand from
a terminal, whose session holds the user's shell and perhaps the server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")  # "/autogroup-123 nice 0" where the kernel has autogroup
# the kernel lets an unprivileged process change an autogroup's niceness at most ten times a second, machine-wide
# (kernel/sched/autogroup.c: -EAGAIN otherwise); two workers starting together may meet that limit
_RETRIES, _RETRY_S = 20, 0.11


def autogroup_nice(path: Path = AUTOGROUP) -> int | None:
    """This process's session group's niceness, or None where the kernel has no autogroup (or it is switched off)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    parts = text.split()
    if len(parts) != 3 or parts[1] != "nice":
        return None
    return int(parts[2])


def lower_priority(increment: int, *, autogroup: Path = AUTOGROUP) -> list[str]:
    """Lower this process's CPU priority by `increment` (0..19): its nice, and, when it leads its own session, its
    session group's. Returns what was changed, as sentences for the worker's log; raises OSError when a change the
    kernel offers is refused for good (a worker that cannot step back must not run at the server's priority)."""
    if not 0 <= increment <= 19:
        raise ValueError(f"a niceness increment is 0..19, got {increment}")
    if increment == 0:
        return []
    done = [f"nice {os.nice(increment)}"]
    current = autogroup_nice(autogroup)
    if current is None or os.getsid(0) != os.getpid() or current >= increment:
        return done
    for attempt in range(_RETRIES):
        try:
            autogroup.write_text(str(increment))
            break
        except BlockingIOError:  # EAGAIN: another process changed a group's niceness within the last 0.1 s
            if attempt == _RETRIES - 1:
                raise
            time.sleep(_RETRY_S)
    done.append(f"session group nice {autogroup_nice(autogroup)}")
    return done
