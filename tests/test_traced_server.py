"""scripts/traced_server.py's comparison of two tracemalloc snapshots names the allocation site that grew."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.append(str(ROOT / "scripts"))
from traced_server import compare  # noqa: E402


def _grow(store: list) -> None:
    store.extend(bytearray(1000) for _ in range(2000))  # ~2 MB in 2,000 blocks, all from this line


def test_compare_names_the_line_whose_memory_grew(tmp_path):
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(8)
    try:
        store: list = []
        tracemalloc.take_snapshot().dump(str(tmp_path / "a.snap"))
        _grow(store)
        tracemalloc.take_snapshot().dump(str(tmp_path / "b.snap"))
    finally:
        if not was_tracing:
            tracemalloc.stop()
    text = compare(tmp_path / "a.snap", tmp_path / "b.snap", top=3)
    size_kb, _, blocks = text.splitlines()[1].split()[:3]  # the biggest growth: ~2,000 KB, 2 blocks per bytearray
    assert float(size_kb) > 1900 and int(blocks) >= 2000
    assert f"{__file__}:{_grow.__code__.co_firstlineno + 1}" in text
