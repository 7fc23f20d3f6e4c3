"""Shared fixtures. `dashboard_env` (opt-in, used by the AppTest suites) gives each test its own runs folder, an empty
data root (so only the offline `digits` dataset is available), thread-backend jobs, and fresh Streamlit caches
(the JobManager lives in st.cache_resource, which is process-global and would leak jobs between tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _clear_caches() -> None:
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def dashboard_env(tmp_path, monkeypatch):
    """Environment for AppTest runs of app.py; stops every job the test started before the folder goes away."""
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GENLIB_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("GENLIB_JOB_BACKEND", "thread")
    monkeypatch.setenv("GENLIB_MAX_JOBS", "2")
    monkeypatch.setenv("GENLIB_PRETRAINED_DIR", "none")  # no shipped runs: each test sees only its own
    monkeypatch.chdir(ROOT)
    _clear_caches()
    yield tmp_path
    from dashboard import state

    state.get_manager().close(stop_jobs=True, timeout=30)
    _clear_caches()


@pytest.fixture
def explorer_runs_dir(tmp_path, monkeypatch):
    """For AppTest runs of one explorer: an empty runs folder and a data root without datasets (the offline digits
    are used), with Streamlit's caches cleared before and after."""
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("GENLIB_DATA_ROOT", str(tmp_path / "no-data"))
    _clear_caches()
    yield tmp_path
    _clear_caches()


@pytest.fixture
def manager(dashboard_env):
    """The dashboard's own JobManager (the one the pages use), for polling jobs from a test."""
    from dashboard import state

    return state.get_manager()


class _NoQuality:
    """Stands in for genlib.quality.records.RunQuality in tests about something else (knobs, forks, pretrained runs, pages):
    the end-of-run evaluation trains a classifier the first time and would dominate their time."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def periodic(self, *args, **kwargs) -> dict:
        return {}

    def final(self, *args, **kwargs) -> dict:
        return {}


@pytest.fixture(scope="module")
def no_quality_evaluation():
    """Training workers started in-process by this module skip the quality evaluations (opt-in per module with
    `pytestmark = pytest.mark.usefixtures("no_quality_evaluation")`)."""
    patch = pytest.MonkeyPatch()
    patch.setattr("genlib.jobs.worker.RunQuality", _NoQuality, raising=False)
    yield
    patch.undo()


@pytest.fixture
def media(monkeypatch):
    """url -> bytes of every media file the app stores (AppTest drops its media manager after each run)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    files = {}
    original = MediaFileManager.add

    def add(self, path_or_data, mimetype, coordinates, *args, **kwargs):
        url = original(self, path_or_data, mimetype, coordinates, *args, **kwargs)
        files[url] = path_or_data
        return url

    monkeypatch.setattr(MediaFileManager, "add", add)
    return files


@pytest.fixture(scope="module")
def kernels():
    """The RBM's fused CPU passes (genlib.sampling.kernels.cd); skips where they cannot be built, fails under CI."""
    import os

    from genlib.sampling.kernels import cd

    k = cd.load()
    if k is None:
        # CI sets GENLIB_REQUIRE_KERNELS=1: there a missing compiler is a failure, never a skip
        if os.environ.get("GENLIB_REQUIRE_KERNELS") == "1":
            pytest.fail(f"fused CD passes unavailable: {cd.status().detail}")
        pytest.skip(f"fused CD passes unavailable: {cd.status().detail}")
    return k
