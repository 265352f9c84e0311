"""Putting photos into the landing area so the stream sees each one exactly when complete.

* Local folders: copy to a hidden temporary name, then rename (atomic on one filesystem); the
  stream's source ignores hidden names, so it never reads a half-written photo.
* Blob (``az://``): a block blob becomes visible only when its upload is committed, whole, so
  no temporary name is needed. The photo's sha256 goes into the blob's metadata, which is how
  a re-upload of the same content is recognised and skipped without downloading anything.

Both upload in parallel (I/O bound: threads) and never raise for one bad file: the summary
lists the failures.
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

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import AzureConfig
from fruits.errors import DataError
from fruits.sources.names import content_type

__all__ = ["UploadSummary", "plan_upload", "upload", "upload_to_blob", "upload_to_folder"]

Progress = Callable[[int, int], None]
Plan = Sequence[tuple[Path, str]]


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


def upload(
    plan: Plan, landing: str, *, azure: AzureConfig, progress: Progress | None = None
) -> UploadSummary:
    """Upload to the configured landing, a folder or an ``az://`` location."""
    if landing.startswith(("az://", "abfs://", "abfss://", "wasb://", "wasbs://")):
        return upload_to_blob(plan, landing, AzureStorage(azure), progress=progress)
    return upload_to_folder(plan, landing, progress=progress)


def upload_to_blob(
    plan: Plan,
    landing: str,
    storage: AzureStorage,
    *,
    workers: int = 8,
    progress: Progress | None = None,
) -> UploadSummary:
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.blob import ContentSettings

    location = BlobLocation.parse(landing)
    container = storage.container(location.container, create=True)

    def one(item: tuple[Path, str]) -> str:
        source, name = item
        data = source.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        blob = container.get_blob_client(location.child(name))
        try:
            if blob.get_blob_properties().metadata.get("sha256") == digest:
                return "skipped"
        except ResourceNotFoundError:
            pass
        try:
            blob.upload_blob(
                data,
                overwrite=True,
                metadata={"sha256": digest},
                content_settings=ContentSettings(content_type=content_type(name)),
            )
        except AzureError as exc:
            return f"{type(exc).__name__}: {_first_line(exc)}"
        return "uploaded"

    return _run(plan, one, workers=workers, progress=progress)


def upload_to_folder(
    plan: Plan, landing: str, *, workers: int = 8, progress: Progress | None = None
) -> UploadSummary:
    root = Path(landing)
    root.mkdir(parents=True, exist_ok=True)

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

    return _run(plan, one, workers=workers, progress=progress)


def _run(
    plan: Plan,
    one: Callable[[tuple[Path, str]], str],
    *,
    workers: int,
    progress: Progress | None,
) -> UploadSummary:
    summary = UploadSummary()
    done = 0
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _safe_name(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    # A leading dot or underscore would hide the photo from the stream's source.
    parts = [p.lstrip("._") or "photo" for p in parts]
    return "/".join(parts)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return _sha256(a) == _sha256(b)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
