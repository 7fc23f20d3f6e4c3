"""genlib.settings: every environment variable parsed in one place, with clear errors, and listed in docs/settings.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from genlib import settings
from genlib.settings import VARIABLES, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "settings.md"
SOURCES = [*sorted((ROOT / "genlib").rglob("*.py")), *sorted((ROOT / "dashboard").rglob("*.py")),
           *sorted((ROOT / "app_pages").glob("*.py")), ROOT / "app.py"]
# what code outside genlib/settings.py may do with os.environ: hand a copy to a child process, or set a variable
# for the children (dashboard/state.py's worker threads); reading a value is genlib.settings' job
WRITES = {"setdefault", "copy", "update", "pop", "__setitem__"}


def test_an_empty_environment_gives_the_documented_defaults():
    s = Settings.from_environ({})
    assert s.data_root == Path("data") and s.runs_dir == Path("runs")
    assert s.cache_dir == Path.home() / ".cache" / "genlib"
    assert s.pretrained_dir == ROOT / "pretrained"
    assert (s.teacher_token, s.job_backend, s.max_jobs, s.worker_nice) == ("", "process", None, 10)
    assert (s.worker_threads, s.server_threads, s.standby_worker, s.fused_cd) == (None, 1, True, True)


def test_values_are_parsed():
    s = Settings.from_environ({"GENLIB_DATA_ROOT": " /d ", "GENLIB_MAX_JOBS": "3", "GENLIB_WORKER_THREADS": "0",
                               "GENLIB_SERVER_THREADS": "0", "GENLIB_STANDBY_WORKER": "off", "GENLIB_FUSED_CD": "No",
                               "GENLIB_JOB_BACKEND": "thread", "GENLIB_RUNS_DIR": "", "CC": "clang"})
    assert s.data_root == Path("/d") and s.max_jobs == 3 and s.worker_threads is None and s.server_threads == 0
    assert not s.standby_worker and not s.fused_cd and s.job_backend == "thread" and s.c_compiler == "clang"
    assert s.runs_dir == Path("runs")  # empty counts as unset


@pytest.mark.parametrize("word", ["", "none", "NONE", "0", "off", "false"])
def test_pretrained_can_be_switched_off(word):
    assert Settings.from_environ({"GENLIB_PRETRAINED_DIR": word}).pretrained_dir is None


def test_the_teacher_token_is_kept_exactly_and_never_printed():
    s = Settings.from_environ({"GENLIB_TEACHER_TOKEN": "  spaced secret  "})
    assert s.teacher_token == "  spaced secret  " and "secret" not in repr(s)


@pytest.mark.parametrize("name, raw", [
    ("GENLIB_MAX_JOBS", "0"), ("GENLIB_MAX_JOBS", "two"), ("GENLIB_MAX_JOBS", "-1"), ("GENLIB_WORKER_NICE", "20"),
    ("GENLIB_WORKER_THREADS", "257"), ("GENLIB_WORKER_THREADS", "1.5"), ("GENLIB_SERVER_THREADS", "x"),
    ("GENLIB_STANDBY_WORKER", "maybe"), ("GENLIB_FUSED_CD", "2"), ("GENLIB_JOB_BACKEND", "slurm"),
    ("GENLIB_DATA_ROOT", "a\x00b"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(name, raw):
    with pytest.raises(SettingsError, match=re.escape(f"${name} must be")) as e:
        Settings.from_environ({name: raw})
    assert repr(raw) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_current_reads_the_environment_at_each_call(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path))
    assert settings.current().runs_dir == tmp_path
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path / "b"))
    assert settings.current().runs_dir == tmp_path / "b"


def test_job_backends_are_the_launchers():
    from genlib.jobs.launchers import BACKENDS

    assert settings.JOB_BACKENDS == tuple(BACKENDS)


def test_one_variable_per_setting():
    import dataclasses

    assert [v.field for v in VARIABLES] == [f.name for f in dataclasses.fields(Settings)]
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def _doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0] if line.startswith("|") else ""):
            rows[name] = cells
    return rows


def test_docs_table_lists_every_variable_with_its_default():
    rows = _doc_rows()
    for var in VARIABLES:
        assert var.name in rows, f"{var.name} is missing from docs/settings.md"
        assert rows[var.name][1] == var.default, (var.name, rows[var.name][1], var.default)


def test_every_variable_the_code_names_is_documented():
    """A GENLIB_* name anywhere in the library, the dashboard or the tests is in docs/settings.md."""
    rows = _doc_rows()
    named = set()
    for path in [*SOURCES, *sorted((ROOT / "tests").rglob("*.py")), ROOT / ".ci" / "run"]:
        named |= set(re.findall(r"\bGENLIB_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    missing = sorted(named - set(rows))
    assert not missing, f"not in docs/settings.md: {missing}"


def _environ_reads(path: Path) -> list[tuple[int, str]]:
    """(line, code) of each place in `path` that reads os.environ (get, [], in, getenv) rather than copy or set it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "getenv":
            out.append((node.lineno, "os.getenv"))
        if not (isinstance(node, ast.Attribute) and node.attr == "environ"):
            continue
        up = parents.get(node)
        if isinstance(up, ast.Attribute) and up.attr in WRITES:
            continue
        if isinstance(up, ast.Subscript) and isinstance(up.ctx, (ast.Store, ast.Del)):
            continue
        if isinstance(up, ast.Call) and isinstance(up.func, ast.Name) and up.func.id == "dict":
            continue  # dict(os.environ, ...): the whole environment handed to a child process
        out.append((node.lineno, ast.unparse(up)[:60]))
    return sorted(out)


def test_only_genlib_settings_reads_the_environment():
    reads = [f"{path.relative_to(ROOT)}:{line} {code}" for path in SOURCES if path != ROOT / "genlib" / "settings.py"
             for line, code in _environ_reads(path)]
    assert not reads, "read these through genlib.settings (and add them to docs/settings.md):\n" + "\n".join(reads)


def test_the_environment_scan_finds_a_read(tmp_path):
    """The scan can fail: each way of reading a variable is caught, a copy for a child process is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nA = os.environ.get('X')\nB = os.environ['Y']\nC = 'Z' in os.environ\n"
                     "D = os.getenv('W')\nE = dict(os.environ, PYTHONUNBUFFERED='1')\nos.environ.setdefault('V', '1')\n"
                     "os.environ['U'] = '1'\n")
    assert [line for line, _ in _environ_reads(probe)] == [2, 3, 4, 5]
