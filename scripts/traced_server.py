"""`streamlit run` with Python's tracemalloc on, dumping a heap snapshot every few seconds, to find what grows in the
dashboard's server under load (scripts/load_test.py --trace-memory DIR starts the server through this); and the
comparison of two snapshots: the allocation sites whose live bytes grew most between them.

    python scripts/traced_server.py serve OUT_DIR EVERY_S app.py --server.port 8501 ...   # as `streamlit run`
    kill -USR1 <its pid>   # start tracing now (the load test sends it when the load starts, after the imports)
    python scripts/traced_server.py compare OUT_DIR/0005.snap OUT_DIR/0040.snap [--top 25]

Tracing slows the server (every allocation records its stack) and adds its own memory, so its figures are for
finding where memory goes, not for the report's RSS; the load test reports RSS from an untraced server.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 8  # stack depth kept per allocation: enough to get from a library's allocation up to the dashboard's call


def _dump_every(out: Path, every_s: float, start: threading.Event) -> None:
    out.mkdir(parents=True, exist_ok=True)
    start.wait()
    tracemalloc.start(FRAMES)  # from here on: what the imports allocated is not traced, nor slowed down
    n = 0
    while True:
        time.sleep(every_s)
        n += 1
        snap = tracemalloc.take_snapshot()
        tmp = out / f"{n:04d}.snap.tmp"
        snap.dump(str(tmp))
        tmp.replace(out / f"{n:04d}.snap")  # whole snapshots only, for a reader that lists the folder


def serve(out: Path, every_s: float, streamlit_args: list[str]) -> None:
    """Run streamlit in this process; tracing starts on SIGUSR1, then a snapshot every `every_s` seconds."""
    start = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: start.set())
    threading.Thread(target=_dump_every, args=(out, every_s, start), name="genlib-tracemalloc", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *streamlit_args]
    cli.main()


def compare(a: Path, b: Path, top: int = 25) -> str:
    """The `top` allocation sites (full stacks) whose live bytes grew most from snapshot a to snapshot b."""
    ignore = [tracemalloc.Filter(False, name) for name in (tracemalloc.__file__, "<frozen importlib._bootstrap>",
                                                            "<frozen importlib._bootstrap_external>", "<unknown>")]
    old = tracemalloc.Snapshot.load(str(a)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(b)).filter_traces(ignore)
    total_old = sum(s.size for s in old.statistics("filename"))
    total_new = sum(s.size for s in new.statistics("filename"))
    lines = [f"traced heap: {total_old / 2**20:.1f} MB -> {total_new / 2**20:.1f} MB ({a.name} -> {b.name})"]
    for stat in new.compare_to(old, "traceback")[:top]:
        lines.append(f"{stat.size_diff / 2**10:+10.1f} KB  {stat.count_diff:+7d} blocks  "
                     f"(now {stat.size / 2**10:.1f} KB)")
        lines += [f"      {f.filename}:{f.lineno}" for f in stat.traceback[-FRAMES:]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run streamlit with tracemalloc, dumping snapshots")
    s.add_argument("out", type=Path)
    s.add_argument("every_s", type=float)
    s.add_argument("streamlit_args", nargs=argparse.REMAINDER)
    c = sub.add_parser("compare", help="what grew between two snapshots")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args.out, args.every_s, args.streamlit_args)
    else:
        print(compare(args.a, args.b, args.top))


if __name__ == "__main__":
    main()
