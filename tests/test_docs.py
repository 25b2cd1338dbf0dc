"""The README and docs/: every relative link points to a file that exists, and an anchor to a heading there."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(heading_anchor(line.lstrip("#")))
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https://, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target} (no heading '{anchor}' in {linked.name})")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    problems = {page.relative_to(REPO).as_posix(): broken_links(page) for page in pages()}
    assert {page: links for page, links in problems.items() if links} == {}


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section: with punctuation\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section-with-punctuation) [file](gone.md) [anchor](other.md#not-a-heading) "
                    "[self](#title) [web](https://example.org/x#y)\n\n# Title\n")
    assert broken_links(page) == [f"gone.md (no file {tmp_path / 'gone.md'})",
                                  "other.md#not-a-heading (no heading 'not-a-heading' in other.md)"]


def test_the_readme_is_a_landing_page_that_reaches_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
