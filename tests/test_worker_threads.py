"""Worker threads: $GENLIB_WORKER_THREADS for runs that leave `threads` unset, and the dashboard's default of one
thread on a 2-core machine (where a two-thread job beside a streaming page trained at a third of its CLI speed)."""

import pytest

from genlib.jobs.worker import WORKER_THREADS_ENV, worker_threads_from_env


@pytest.mark.parametrize("raw,expected", [(None, None), ("", None), ("0", None), ("1", 1), (" 3 ", 3)])
def test_the_variable_gives_a_thread_count_or_none(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(WORKER_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKER_THREADS_ENV, raw)
    assert worker_threads_from_env() == expected


@pytest.mark.parametrize("raw", ["two", "-1", "1.5", "9999"])
def test_a_bad_value_is_refused_with_its_name(monkeypatch, raw):
    monkeypatch.setenv(WORKER_THREADS_ENV, raw)
    with pytest.raises(ValueError, match="GENLIB_WORKER_THREADS must be a whole number"):
        worker_threads_from_env()


@pytest.mark.parametrize("cores,already,expected", [(2, None, "1"), (1, None, "1"), (8, None, None), (2, "2", "2")])
def test_the_dashboard_leaves_a_core_on_small_machines(monkeypatch, cores, already, expected):
    from dashboard import state

    monkeypatch.setattr(state.os, "cpu_count", lambda: cores)
    if already is None:
        monkeypatch.delenv(WORKER_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKER_THREADS_ENV, already)
    state._leave_a_core()
    assert state.os.environ.get(WORKER_THREADS_ENV) == expected


@pytest.mark.parametrize("cores,expected", [(0, 1), (1, 1), (2, 1), (3, None), (64, None)])
def test_the_dashboard_thread_rule_by_core_count(cores, expected):
    from genlib.jobs.worker import dashboard_job_threads

    assert dashboard_job_threads(cores) == expected  # 0 (a count os.cpu_count could not tell) counts as small
