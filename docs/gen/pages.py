"""``mkdocs build`` runs this (mkdocs-gen-files): it writes the generated pages into the site's
virtual docs folder, never into docs/ itself, so no copy can be edited by hand and drift.

* reference/cli.md, reference/configuration.md, reference/tables.md: from the code
  (:mod:`reference`);
* measurements/benchmarks.md, measurements/reliability.md: BENCHMARKS.md and RELIABILITY.md
  of the repository root, their links made relative to where the pages sit in the site.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import mkdocs_gen_files

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import reference  # noqa: E402

from fruits import cli  # noqa: E402
from fruits.config import PACKAGED_CONFIGS, Config  # noqa: E402
from fruits.sinks.tables import SCHEMAS  # noqa: E402

_LINK = re.compile(r"\]\((?!https?://|#)([^)\s]+)\)")


def _relink(text: str, site_path: str) -> str:
    """Links of a root Markdown file, made to work from ``site_path`` in the site: another root
    file the site includes becomes its page, a file under docs/ a relative link; any other link
    is left as it is, and a broken one fails the strict build."""
    depth = site_path.count("/")
    pages = {"BENCHMARKS.md": "benchmarks.md", "RELIABILITY.md": "reliability.md"}

    def fix(match: re.Match[str]) -> str:
        target, _, anchor = match[1].partition("#")
        suffix = f"#{anchor}" if anchor else ""
        if target in pages:
            return f"]({pages[target]}{suffix})"
        if target.startswith("docs/"):
            return f"]({'../' * depth}{target.removeprefix('docs/')}{suffix})"
        return f"]({match[1]})"

    return _LINK.sub(fix, text)


def main() -> None:
    with mkdocs_gen_files.open("reference/cli.md", "w") as out:
        out.write(reference.cli_reference(cli._parser()))
    conf = ROOT / "fruits" / "conf"
    files = {name: (conf / f"{name}.yaml").read_text() for name in PACKAGED_CONFIGS}
    with mkdocs_gen_files.open("reference/configuration.md", "w") as out:
        out.write(reference.config_reference(Config, files))
    tables = ROOT / "fruits" / "sinks" / "tables.py"
    with mkdocs_gen_files.open("reference/tables.md", "w") as out:
        out.write(reference.tables_reference(SCHEMAS, tables.read_text()))
    for name, page in (("BENCHMARKS.md", "benchmarks"), ("RELIABILITY.md", "reliability")):
        site_path = f"measurements/{page}.md"
        with mkdocs_gen_files.open(site_path, "w") as out:
            out.write(_relink((ROOT / name).read_text(), site_path))
        mkdocs_gen_files.set_edit_path(site_path, f"../{name}")


main()
