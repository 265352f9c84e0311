"""Which files are photos: by extension (either case), an optional glob, never hidden ones.

One rule for every source: Spark's file source gets it as a Hadoop glob
(:func:`extension_glob`), the Blob source and the uploader as a predicate (:class:`NameFilter`).
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
from collections.abc import Sequence

__all__ = ["NameFilter", "content_type", "extension_glob"]


def extension_glob(extensions: Sequence[str]) -> str:
    """``*.{jpg,JPG,...}``: Hadoop globs are case sensitive, phones write both cases."""
    variants = sorted({v for ext in extensions for v in (ext.lower(), ext.upper())})
    return "*.{" + ",".join(variants) + "}"


class NameFilter:
    """Which blob names are photos: extension (either case) and an optional glob on the file
    name; names starting with ``.`` or ``_`` are hidden, as for Spark's file source, and so is
    everything in a hidden folder below ``under`` (the landing's prefix), which Spark's
    recursive listing does not enter either."""

    def __init__(
        self, extensions: Sequence[str], glob: str | None = None, *, under: str = ""
    ) -> None:
        self._extensions = tuple(f".{e.lower().lstrip('.')}" for e in extensions)
        self._globs = _expand_braces(glob) if glob else []
        self._under = under

    def __call__(self, name: str) -> bool:
        relative = name.removeprefix(self._under) if self._under else name
        base = relative.rsplit("/", 1)[-1]
        if not base or any(part.startswith((".", "_")) for part in relative.split("/")):
            return False
        if not base.lower().endswith(self._extensions):
            return False
        return not self._globs or any(fnmatch.fnmatchcase(base, g) for g in self._globs)


def _expand_braces(pattern: str) -> list[str]:
    """``*.{jpg,png}`` -> ``[*.jpg, *.png]`` (Hadoop globs have braces, fnmatch has not)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for alt in match.group(1).split(",") for p in _expand_braces(head + alt + tail)]


def content_type(name: str) -> str:
    """The MIME type a photo's name implies (set on uploaded blobs, and in Event Grid events)."""
    guessed, _ = mimetypes.guess_type(name)
    if name.lower().endswith(".webp"):
        return "image/webp"
    return guessed or "application/octet-stream"
