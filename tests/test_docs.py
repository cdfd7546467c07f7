"""The docs stay usable: a small landing page, links and anchors that resolve, files named in
the docs that exist, a Makefile whose targets all say what they do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").glob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# repository paths named in backticks, e.g. `segpets/command/checks.py`, `tests/test_x.py`
NAMED_PATH = re.compile(
    r"`((?:segpets|tests|scripts|notebooks|docs)/[\w./-]+\.(?:py|yaml|md|ipynb|sh))`"
)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings in code
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_readme_is_a_landing_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 12_000, f"README.md is {len(text.encode())} bytes"
    assert "make train" in text and "make test" in text
    assert "../shared" not in text  # examples run on what a user has
    tree = text.index("## The package")
    assert tree < text.index("## Workflows")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        exists = linked.exists()
        if not exists or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_files_named_in_the_docs_exist(page: Path) -> None:
    text = page.read_text()
    if page.name in ("CHANGELOG.md", "history.md"):
        return  # they name files as they were
    missing = [p for p in NAMED_PATH.findall(text) if "*" not in p and not (REPO / p).exists()]
    assert not missing, f"{page.name}: {missing}"


def test_every_make_target_says_what_it_does() -> None:
    """`make help` prints the `## ` comments: every phony target has one."""
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.+)$", makefile, re.M).group(1).split()
    documented = set(re.findall(r"^([a-z][a-z-]*):.*## ", makefile, re.M))
    assert set(phony) <= documented, set(phony) - documented
    assert {"train", "test", "test-fast", "format", "help"} <= documented
    assert 'pytest -m "not slow"' in makefile
