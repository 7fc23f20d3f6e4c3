"""The README and docs/ point at things that exist: every local link (and its #anchor), every repository path they
name (genlib/..., scripts/..., tests/...::test), and the README stays a front page (at most 160 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 160


FILE_SUFFIXES = {"py", "md", "png", "c", "js", "json", "jsonl", "toml", "txt", "safetensors", "ini", "cfg"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
# a repository path named in the text: one of the top-level folders, then path characters
REPO_PATH = re.compile(r"(?<![\w./~<-])((?:app_pages|dashboard|genlib|scripts|tests|docs|pretrained|\.streamlit|\.ci)"
                       r"/[\w./-]*(?:::\w+)?)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.M)}


def _rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()



def _is_module_attribute(name: str) -> bool:
    """`dashboard/explore/widgets.test_data`: a function named by its module's path, which exists as a .py file."""
    module, _, attribute = name.rpartition(".")
    return attribute.isidentifier() and attribute not in FILE_SUFFIXES and (ROOT / f"{module}.py").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: _rel(p))
def test_local_links_exist(doc):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{_rel(doc)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: _rel(p))
def test_named_repository_paths_exist(doc):
    missing = []
    for raw in REPO_PATH.findall(doc.read_text(encoding="utf-8")):
        name, _, test_name = raw.rstrip(".,;:").partition("::")
        path = ROOT / name.rstrip(".,;:")
        if not path.exists() and not _is_module_attribute(name):
            missing.append(name)
        elif test_name and not re.search(rf"^\s*def {re.escape(test_name)}\(", path.read_text(), re.M):
            missing.append(f"{name}::{test_name}")
    assert not missing, f"{_rel(doc)} names paths that do not exist: {sorted(set(missing))}"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_checks_catch_what_they_should(tmp_path):
    """The patterns find a dangling link, a bad anchor and a missing path (so a green run means something)."""
    text = ("See [x](docs/nope.md), [y](#no-such-heading), `genlib/nope.py`, "
            "tests/test_docs.py::test_nope and ![img](docs/img/dashboard.png).\n# A heading\n")
    assert LINK.findall(text) == ["docs/nope.md", "#no-such-heading", "docs/img/dashboard.png"]
    assert REPO_PATH.findall(text) == ["docs/nope.md", "genlib/nope.py", "tests/test_docs.py::test_nope",
                                       "docs/img/dashboard.png"]
    doc = tmp_path / "x.md"
    doc.write_text(text)
    assert _anchors(doc) == {"a-heading"}
    assert _slug("Under a classroom's load") == "under-a-classrooms-load"
    assert _slug("GAN sample quality in bf16") == "gan-sample-quality-in-bf16"
    assert _is_module_attribute("dashboard/explore/widgets.tabbed_panels")
    assert not _is_module_attribute("genlib/nope.py") and not _is_module_attribute("genlib/cli.md")
