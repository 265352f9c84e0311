"""Putting photos into the landing area so the stream sees each one exactly when complete.

Local folders: copy to a hidden temporary name, then rename (atomic on one filesystem); the
stream's file source ignores hidden names, so it never reads a half-written photo.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fruits.errors import DataError

__all__ = ["UploadSummary", "plan_upload", "upload_to_folder"]


@dataclass
class UploadSummary:
    uploaded: int = 0
    skipped_same_content: int = 0
    failed: list[str] = field(default_factory=list)


def plan_upload(sources: Sequence[str], extensions: Iterable[str]) -> list[tuple[Path, str]]:
    """(local file, name in the landing) for each photo under ``sources`` (files or folders).

    A folder keeps its own name and inner structure (``Kiwi/1.jpg``); names never contain
    ``..`` or absolute parts, so nothing lands outside the landing area.
    """
    wanted = {e.lower().lstrip(".") for e in extensions}
    plan: list[tuple[Path, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            plan.append((path, path.name))
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower().lstrip(".") in wanted:
                    plan.append((file, f"{path.name}/{file.relative_to(path).as_posix()}"))
        else:
            raise DataError(f"nothing to upload at {source}")
    return [(file, _safe_name(name)) for file, name in plan]


def upload_to_folder(
    plan: Sequence[tuple[Path, str]],
    landing: str,
    *,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> UploadSummary:
    root = Path(landing)
    root.mkdir(parents=True, exist_ok=True)
    summary = UploadSummary()
    done = 0

    def one(item: tuple[Path, str]) -> str:
        source, name = item
        target = root / name
        if target.exists() and _same_content(source, target):
            return "skipped"
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return "uploaded"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (source, _), result in zip(plan, pool.map(_guard(one), plan), strict=True):
            if result == "uploaded":
                summary.uploaded += 1
            elif result == "skipped":
                summary.skipped_same_content += 1
            else:
                summary.failed.append(f"{source}: {result}")
            done += 1
            if progress and (done % 50 == 0 or done == len(plan)):
                progress(done, len(plan))
    return summary


def _guard(task: Callable[[tuple[Path, str]], str]) -> Callable[[tuple[Path, str]], str]:
    def run(item: tuple[Path, str]) -> str:
        try:
            return task(item)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"

    return run


def _safe_name(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    # A leading dot or underscore would hide the photo from Spark's file source.
    parts = [p.lstrip("._") or "photo" for p in parts]
    return "/".join(parts)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return _sha256(a) == _sha256(b)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
