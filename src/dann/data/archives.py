"""One downloadable file of a benchmark dataset: where it comes from, its published checksum, whether to unpack it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Archive:
    filename: str  # saved under --root with this name
    url: str = ""  # "": no direct public address; the user puts the file in --root (see the dataset's homepage)
    checksum: str = ""  # "sha256:<hex>" or "md5:<hex>" from a published source; "": unknown, --no-verify needed
    extract: bool = True  # .zip / .tar(.gz): unpacked into --root
