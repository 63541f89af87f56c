"""The README is a manual: short, linking every docs page; no table cell is a paragraph; the
generated results page is fresh."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "research" / "README.md"]
PAGES += sorted((ROOT / "research" / "studies").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make repro" in first_block and "make test" in first_block


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in DOCS if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = [
        target
        for target, _ in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, f"{page.name}: broken links {broken}"


def test_no_table_cell_is_over_200_characters():
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    pages = {ROOT / p for p in tracked} | set(PAGES)
    long = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in sorted(pages)
        if page.is_file()
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if line.startswith("|") and any(len(cell) > 200 for cell in line.split("|"))
    ]
    assert not long, f"table cells over 200 characters: {long}"


def test_the_results_page_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_results.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
