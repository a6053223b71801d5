"""The README and docs/ stay short, self-contained and free of broken relative links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

# [text](target) and ![alt](target); a target has no spaces (titles are not used here).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
# Words that only make sense inside the project's own tracker or on its author's machine.
FORBIDDEN = {
    "an issue number": re.compile(r"\bissue\s+#?\d", re.IGNORECASE),
    "a path on the author's machine": re.compile(r"/work/"),
    "a path outside the repository": re.compile(r"\.\./shared"),
    "the seed (an internal document)": re.compile(r"\bthe seed\b|\bseed's\b", re.IGNORECASE),
}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where a [..](..) is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def resolves(page: Path, target: str) -> bool:
    """Whether a relative link of page names a file in the repository, and its anchor a heading."""
    path_part, _, anchor = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    if ROOT not in (resolved, *resolved.parents) or not resolved.exists():
        return False
    return not anchor or resolved.suffix != ".md" or anchor in anchors(resolved)


def broken_links(page: Path) -> list[str]:
    """Each relative link of page whose file, or whose anchor in a Markdown file, is missing."""
    targets = LINK.findall(prose(page.read_text(encoding="utf-8")))
    # http:, https:, mailto: are not checked (no network in tests).
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    return [t for t in relative if not resolves(page, t)]


def test_docs_pages_exist() -> None:
    assert len(pages()) > 1, "docs/ holds the long material the README links to"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_references(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = {what: rule.findall(text) for what, rule in FORBIDDEN.items() if rule.search(text)}
    assert found == {}


def test_readme_reads_in_five_minutes() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES


def test_readme_links_every_docs_page() -> None:
    readme = prose((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)}
    unlinked = [p.name for p in pages()[1:] if p.name not in linked]
    assert unlinked == []


def test_no_drafts_at_the_root() -> None:
    assert sorted(p.name for p in ROOT.glob("README-*.md")) == []


def test_slug_follows_github() -> None:
    assert slug("Open loop: latency against offered load (`--rate`)") == (
        "open-loop-latency-against-offered-load---rate"
    )
    assert slug("How it measures") == "how-it-measures"
