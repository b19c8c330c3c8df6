"""The front pages link into docs/ by relative paths, so that they read on GitHub too. ``mkdocs build --strict``
(``make docs``) checks every link inside docs/; this checks the links of README.md and CONTRIBUTING.md."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor, as Markdown's table of contents (and GitHub, for these headings) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # a `# comment` in a code block is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_relative_links_point_at_pages_and_headings_that_exist(name):
    page = ROOT / name
    links = [link for link in LINK.findall(page.read_text()) if "://" not in link]
    for link in links:
        path, _, anchor = link.partition("#")
        target = page.parent / path if path else page
        assert target.is_file(), f"{name} links to {link}: no such file"
        assert not anchor or anchor in anchors(target), f"{name} links to {link}: no such heading"
    assert name == "CONTRIBUTING.md" or len(links) > 10  # the README is the way into the documentation
