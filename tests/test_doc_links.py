"""Every relative link in README.md, CONTRIBUTING.md and docs/*.md resolves: the file exists and,
for `page.md#anchor`, the page has a heading with that GitHub anchor. Project paths written in
backticks (`benchmarks/x.py`, `docs/y.md`) must exist too."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PROJECT_PATH = re.compile(r"`((?:benchmarks|pipeline|danet|refimpl|tests|notebooks|docs)/[\w./-]+\.\w+)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(page: pathlib.Path) -> list[str]:
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):                 # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file {resolved.relative_to(ROOT)}")
        elif anchor and resolved.suffix == ".md":
            headings = [github_anchor(line.lstrip("#")) for line in resolved.read_text().splitlines()
                        if line.startswith("#")]
            if anchor not in headings:
                broken.append(f"{target}: no heading with anchor #{anchor}")
    for path in PROJECT_PATH.findall(text):
        if "*" not in path and not (ROOT / path).exists():
            broken.append(f"`{path}`: no such file in the repository")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    assert broken_links(page) == []


def test_checker_finds_a_broken_link(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top part\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](a.md#top-part) [gone](b.md) [bad](a.md#nope) `docs/none.md` [web](https://x.org)\n")
    assert broken_links(page) == ["b.md: no such file b.md", "a.md#nope: no heading with anchor #nope",
                                  "`docs/none.md`: no such file in the repository"]
