"""Which files are photos: by extension (either case), an optional glob, never hidden ones.

One rule for every source: the project's source (folder and Blob) and the uploader get it as a
predicate (:class:`NameFilter`), Spark's ``binaryFile`` (training folders, Auto Loader) as a Hadoop
glob (:func:`extension_glob`).
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
from collections.abc import Sequence

__all__ = ["NameFilter", "content_type", "extension_glob", "has_extension"]

# MIME types of the photo formats, by extension: Python's mimetypes lacks HEIC/HEIF (and AVIF
# before 3.13), and the app reads the type from the blob and the event.
_PHOTO_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "avif": "image/avif",
    "mpo": "image/mpo",
}


def extension_glob(extensions: Sequence[str]) -> str:
    """``*.{[jJ][pP][gG],...}``: Hadoop globs are case sensitive, and phones and cameras write
    ``jpg``, ``JPG``, ``Heic``...: every letter in either case."""
    variants = sorted({_either_case(_bare(ext)) for ext in extensions})
    return "*.{" + ",".join(variants) + "}"


def extension_regex(extensions: Sequence[str]) -> str:
    """The extension rule as a Java regular expression on a path (case-insensitive)."""
    alternatives = "|".join(sorted({re.escape(_bare(ext)) for ext in extensions}))
    return f"(?i)\\.({alternatives})$"


def has_extension(name: str, extensions: Sequence[str]) -> bool:
    """Whether ``name`` ends with one of ``extensions``, in any case (``extension_glob``'s rule)."""
    return name.lower().endswith(tuple(f".{_bare(e)}" for e in extensions))


def _bare(extension: str) -> str:
    return extension.lower().lstrip(".")


def _either_case(extension: str) -> str:
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in extension)


class NameFilter:
    """Which file names are photos: extension (either case) and, when given, a glob on the
    file's name (``stream.path_glob``: both must match); names starting with ``.`` or ``_`` are
    hidden, as for Spark's file source, and so is everything in a hidden folder below ``under``
    (the landing's prefix), which Spark's recursive listing does not enter either."""

    def __init__(
        self, extensions: Sequence[str], glob: str | None = None, *, under: str = ""
    ) -> None:
        self._extensions = tuple(extensions)
        self._globs = _expand_braces(glob) if glob else []
        self._under = under

    def __call__(self, name: str) -> bool:
        relative = name.removeprefix(self._under) if self._under else name
        base = relative.rsplit("/", 1)[-1]
        if not base or any(part.startswith((".", "_")) for part in relative.split("/")):
            return False
        if not has_extension(base, self._extensions):
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
    extension = name.rsplit("/", 1)[-1].rpartition(".")[2].lower()
    if extension in _PHOTO_TYPES:
        return _PHOTO_TYPES[extension]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
