"""MkDocs hook: the build warns, so that ``mkdocs build --strict`` fails, when a public name is missing from the API
reference. A module's public names are its ``__all__``, read by griffe without importing anything; a name counts as
documented when some page has an element with the id ``<module>.<name>``, which mkdocstrings gives every object it
renders (a page may also set one by hand, for a name that static analysis cannot see)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import griffe

MODULES = ("dann", "dann.sklearn", "dann.methods", "dann.models", "dann.data")  # those of the reference pages

log = logging.getLogger("mkdocs.hooks.api_coverage")  # a warning under "mkdocs." counts in strict mode
anchors: set[str] = set()


def on_pre_build(config: Any) -> None:
    anchors.clear()


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    anchors.update(re.findall(r'id="([\w.]+)"', html))
    return html


def on_post_build(config: Any) -> None:
    src = Path(config["config_file_path"]).parent / "src"
    package = griffe.load("dann", search_paths=[str(src)], resolve_aliases=False)
    for path in MODULES:
        module = package if path == "dann" else package[path.removeprefix("dann.")]
        missing = sorted(name for name in module.exports or () if f"{path}.{name}" not in anchors)
        if missing:
            log.warning("the API reference leaves out %s: %s", path, ", ".join(f"{path}.{n}" for n in missing))
