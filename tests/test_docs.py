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


# --- the repository speaks of itself: no path outside it -----------------------------------------------------

# A relative path that climbs out of its folder must land on a file of the repository.
CLIMBING = re.compile(r"(?<![\w.~/-])(?:\.\./)+[\w.-]+(?:/[\w.*-]+)*")
# Absolute paths that belong to one machine's layout (a user's home, a scratch or work folder, local installs);
# system locations every Linux has (/proc, /dev/null, /usr/share/datasets of a Debian package, /usr/local/cuda)
# and the docs' example dataset root (/data/...) are not among them.
MACHINE = re.compile(r"(?<![\w.~:/-])/(?:tmp|root|home|work|opt|mnt|srv|var|etc|old_root|farm)(?:/[\w.*-]*)*")


def tracked_text_files() -> list[Path]:
    import subprocess

    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if (REPO / n).suffix not in (".png", ".pkl", ".pth", ".gz")]


def outside_paths(file: Path, repo: Path = REPO) -> list[str]:
    found = []
    for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
        for path in CLIMBING.findall(line):
            target = (file.parent / path).resolve()
            if not (target.is_relative_to(repo.resolve()) and target.exists()):
                found.append(f"{file.relative_to(repo)}:{number}: {path} (outside the repository or missing)")
        found += [f"{file.relative_to(repo)}:{number}: {path} (a machine's path)" for path in MACHINE.findall(line)]
    return found


def test_no_tracked_file_names_a_path_outside_the_repository_or_of_one_machine():
    assert [problem for file in tracked_text_files() for problem in outside_paths(file)] == []


def test_the_path_check_catches_a_path_outside_and_a_machine_path(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.md").write_text("")
    page = tmp_path / "docs" / "page.md"
    up, scratch = "..", "/" + "tmp/run.log"  # not written out: this file is checked too
    page.write_text(f"see {up}/results/x.md and {up}/{up}/shared/ENV.md, or {up}/results/gone.md;\nlogs in "
                    f"{scratch}, data in /data/coco, /usr/share/datasets/fashion-mnist\n")
    assert outside_paths(page, tmp_path) == [
        f"docs/page.md:1: {up}/{up}/shared/ENV.md (outside the repository or missing)",
        f"docs/page.md:1: {up}/results/gone.md (outside the repository or missing)",
        f"docs/page.md:2: {scratch} (a machine's path)"]


# --- a figure quoted from a committed result file is in that file --------------------------------------------

RESULT_LINK = re.compile(r"\]\(((?:\.\./)?results/[\w.-]+\.md)(?:#[^)]*)?\)")
DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?!\d|\.\d)")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*`(\[])")


def quoted_figures(page: Path) -> list[tuple[str, Path, str]]:
    """(figure, result file, where) for every decimal figure in a sentence that links a committed result file,
    and in a table that follows a paragraph linking one."""
    quoted = []
    blocks = re.split(r"\n\s*\n", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    linked_before: list[Path] = []
    for block in blocks:
        if block.lstrip().startswith("|"):
            if len(linked_before) == 1:  # a table under a paragraph that links one result file
                quoted += [(figure, linked_before[0], "table") for figure in DECIMAL.findall(block)]
            continue
        linked_before = []
        for sentence in SENTENCE_END.split(" ".join(block.split())):
            files = [(page.parent / link).resolve() for link in RESULT_LINK.findall(sentence)]
            linked_before += files
            for file in files:
                quoted += [(figure, file, sentence[:80]) for figure in DECIMAL.findall(sentence)]
    return quoted


def misquoted(page: Path) -> list[str]:
    wrong = []
    for figure, file, where in quoted_figures(page):
        if not re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", file.read_text()):
            wrong.append(f"{page.name}: {figure} is not in {file.name} ({where} ...)")
    return wrong


def test_every_figure_quoted_from_a_committed_result_file_is_in_it():
    assert [problem for page in pages() for problem in misquoted(page)] == []
    assert sum(len(quoted_figures(page)) for page in pages()) > 20  # the README and docs do quote results


def test_the_quote_check_catches_a_figure_that_is_not_in_its_file(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.md").write_text("| sl | 54.9 ms | ratio 1.092 |\n")
    page = tmp_path / "README.md"
    page.write_text("SL takes 54.9 ms a step and LOOK 1.090 × that ([file](results/r.md)). Unlinked: 3.33.\n\n"
                    "As [the file](results/r.md) says:\n\n| method | ms |\n|---|---|\n| sl | 54.8 |\n")
    assert misquoted(page) == ["README.md: 1.090 is not in r.md (SL takes 54.9 ms a step and LOOK 1.090 × that "
                               "([file](results/r.md)). ...)", "README.md: 54.8 is not in r.md (table ...)"]
