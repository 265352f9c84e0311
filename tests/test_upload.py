"""Uploads into a local landing folder: complete files only, same content skipped, safe names."""

from __future__ import annotations

from pathlib import Path

from fruits.upload import plan_upload, upload_to_folder

from .conftest import real_photos


def test_upload_folder_keeps_class_names_and_skips_same_content(tmp_path: Path) -> None:
    source = tmp_path / "Kiwi"
    source.mkdir()
    for photo in real_photos("Test", "Kiwi", 3):
        (source / photo.name).write_bytes(photo.read_bytes())
    (source / "notes.txt").write_text("not a photo")
    landing = tmp_path / "landing"

    plan = plan_upload([str(source)], ["jpg"])
    assert [name.split("/")[0] for _, name in plan] == ["Kiwi"] * 3
    first = upload_to_folder(plan, str(landing))
    again = upload_to_folder(plan, str(landing))

    assert (first.uploaded, first.skipped_same_content) == (3, 0)
    assert (again.uploaded, again.skipped_same_content) == (0, 3)
    files = sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*") if p.is_file())
    assert files == sorted(name for _, name in plan)  # no temporary file left behind


def test_names_cannot_escape_the_landing_or_hide_from_the_stream(tmp_path: Path) -> None:
    photo = tmp_path / ".hidden.jpg"
    photo.write_bytes(real_photos("Test", "Banana", 1)[0].read_bytes())
    [(_, name)] = plan_upload([str(photo)], ["jpg"])
    assert name == "hidden.jpg"
    from fruits.upload import _safe_name

    assert _safe_name("../../etc/passwd.jpg") == "etc/passwd.jpg"
    assert _safe_name("/abs/_x.jpg") == "abs/x.jpg"
