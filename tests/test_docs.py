"""The documentation site: its reference pages are generated from the code (a new CLI option, a
new config key, a new column appears without anyone editing a page), every configuration key is
explained, the strict build fails on a broken link or anchor, and what the pages name (tests,
commands) exists."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pyarrow as pa

from fruits import cli
from fruits.config import PACKAGED_CONFIGS, Config, StreamConfig
from fruits.sinks.tables import SCHEMAS

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"
sys.path.insert(0, str(DOCS / "gen"))

import reference  # noqa: E402

MKDOCS = Path(sys.executable).with_name("mkdocs")


def _packaged_yaml() -> dict[str, str]:
    return {n: (PROJECT / "fruits" / "conf" / f"{n}.yaml").read_text() for n in PACKAGED_CONFIGS}


def _subparser(parser: Any, name: str) -> Any:
    return {n: child for n, _, child in reference._subcommands(parser)}[name]


def test_every_subcommand_and_option_of_the_parser_is_in_the_cli_page() -> None:
    parser = cli._parser()
    page = reference.cli_reference(parser)
    for name, _, child in reference._subcommands(parser):
        assert f"## `fruits {name}`" in page
        for action in child._actions:
            for option in action.option_strings:
                assert f"`{option}`" in page or option in ("-h", "--help"), option
    # Nested: fruits bench <kind>, with its own options.
    assert "### `fruits bench soak`" in page and "`--minutes`" in page


def test_an_option_added_to_the_parser_appears_with_its_help_and_default() -> None:
    parser = cli._parser()
    stream = _subparser(parser, "stream")
    stream.add_argument(
        "--max-wait", type=float, default=2.5, help="give up after this many seconds idle"
    )
    page = reference.cli_reference(parser)
    section = page[page.index("## `fruits stream`") : page.index("## `fruits status`")]
    assert "| `--max-wait` `MAX_WAIT` | `2.5` | give up after this many seconds idle |" in section


def _with_stream_field(name: str, default: Any) -> type[Any]:
    """A Config whose stream section has one more key, as a new release would add it."""
    stream = dataclasses.make_dataclass(
        "StreamConfig",
        [(name, type(default), dataclasses.field(default=default))],
        bases=(StreamConfig,),
        frozen=True,
    )
    hints = typing.get_type_hints(Config)
    fields = [
        (f.name, stream, dataclasses.field(default_factory=stream))
        if f.name == "stream"
        else (
            f.name,
            hints[f.name],
            dataclasses.field(default=f.default, default_factory=f.default_factory),
        )
        for f in dataclasses.fields(Config)
    ]
    return dataclasses.make_dataclass("Config", fields, frozen=True)


def test_a_key_added_to_the_yaml_appears_with_its_default_and_meaning() -> None:
    files = _packaged_yaml()
    lines = files["local"].splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  query_name:")) + 1
    lines[at:at] = [
        "  # Jitter added to each trigger, so replicas do not list at once.",
        "  trigger_jitter_s: 0.25",
    ]
    files["local"] = "\n".join(lines)
    page = reference.config_reference(_with_stream_field("trigger_jitter_s", 0.0), files)
    assert (
        "| `stream.trigger_jitter_s` | `0.25` | Jitter added to each trigger, so replicas do not "
        "list at once. |"
    ) in page


def test_a_key_no_yaml_comments_is_reported_and_flagged_in_the_page() -> None:
    files = _packaged_yaml()
    config = _with_stream_field("poll_jitter_s", 0.5)
    parsed = {n: reference.yaml_keys(t) for n, t in files.items()}
    assert reference.missing_meanings(config, parsed) == ["stream.poll_jitter_s"]
    page = reference.config_reference(config, files)
    # Not in local.yaml: the built-in default, in italics, and the missing meaning said.
    assert "| `stream.poll_jitter_s` | *`0.5`* | **(no comment in any packaged YAML)** |" in page


def test_every_config_key_has_a_meaning_and_its_packaged_values() -> None:
    files = _packaged_yaml()
    parsed = {n: reference.yaml_keys(t) for n, t in files.items()}
    assert reference.missing_meanings(Config, parsed) == []
    page = reference.config_reference(Config, files)
    assert "no comment in any packaged YAML" not in page
    # A key shared under the comment of the key above it, and the other files' values.
    assert "| `spark.executor_cores` | `null` | On a cluster: memory and cores" in page
    row = next(line for line in page.splitlines() if line.startswith("| `spark.delta_writer`"))
    assert row.endswith("|  | `spark` |")  # azurite.yaml: the same; databricks.yaml: spark
    row = next(line for line in page.splitlines() if line.startswith("| `stream.discovery`"))
    assert "*`listing`*" in row and row.endswith("|  | `notification` |")


def test_the_tables_page_has_every_column_with_its_type_nullability_and_comment() -> None:
    page = reference.tables_reference(SCHEMAS, (PROJECT / "fruits/sinks/tables.py").read_text())
    for table, schema in SCHEMAS.items():
        assert f"## `{table}`" in page
        for column in schema:
            assert f"| `{column.name}` | `" in page
    assert "| `image_id` | `string` | **no** | sha256 of the photo's bytes |" in page
    assert "one row per hub, replaced at each published chunk" in page  # the table's comment
    source = """
T = "t"
SCHEMAS = {
    T: pa.schema(
        [
            # Added in this release,
            pa.field("new_col", pa.int32()),  # counted per batch
            pa.field("other", pa.string()),
        ]
    )
}
"""
    schemas = {"t": pa.schema([pa.field("new_col", pa.int32()), pa.field("other", pa.string())])}
    added = reference.tables_reference(schemas, source)
    assert "| `new_col` | `int32` | yes | Added in this release, counted per batch |" in added
    assert "| `other` | `string` | yes |  |" in added


def _build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strict_with_generated_pages_and_a_broken_anchor_fails(
    tmp_path: Path,
) -> None:
    built = _build(PROJECT, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "fruits stream" in cli_page and "--once" in cli_page
    config_page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert "stream.batch_timeout_s" in config_page
    reliability = (tmp_path / "site" / "measurements" / "reliability" / "index.html").read_text()
    assert "Soak: 100 minutes of a running stream" in reliability

    # The same project with one broken anchor: the strict build fails, naming it.
    copy = tmp_path / "copy"
    shutil.copytree(PROJECT / "docs", copy / "docs")
    shutil.copy(PROJECT / "mkdocs.yml", copy / "mkdocs.yml")
    for name in ("BENCHMARKS.md", "RELIABILITY.md", "fruits"):
        (copy / name).symlink_to(PROJECT / name)
    page = copy / "docs" / "concepts" / "contracts.md"
    page.write_text(page.read_text() + "\nSee [the journal](exactly-once.md#no-such-step).\n")
    broken = _build(copy, tmp_path / "broken")
    assert broken.returncode != 0
    assert "no-such-step" in broken.stdout + broken.stderr


def _hand_written() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "gen" not in p.parts)


def test_every_test_the_pages_name_exists() -> None:
    named = set()
    for page in _hand_written():
        named |= set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", page.read_text()))
    assert len(named) > 20
    for path, name in sorted(named):
        assert re.search(rf"^def {name}\(", (PROJECT / path).read_text(), re.M), (path, name)


_COMMAND = re.compile(r"(?:^|[`;&(]\s*|\$ )fruits ([a-z]+)((?: [a-z]+)?)([^`\n|&;]*)", re.M)


def test_every_fruits_command_and_option_the_pages_show_exists() -> None:
    parser = cli._parser()
    commands = {name: child for name, _, child in reference._subcommands(parser)}
    checked = 0
    for page in _hand_written():
        for match in _COMMAND.finditer(page.read_text()):
            name, kind, rest = match[1], match[2].strip(), match[3]
            assert name in commands, (page.name, match[0])
            child = commands[name]
            if name == "bench" and kind:
                child = {n: c for n, _, c in reference._subcommands(child)}[kind]
            known = {o for a in child._actions for o in a.option_strings}
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                assert option in known, (page.name, match[0], option)
            checked += 1
    assert checked > 20


def test_the_readme_is_short_starts_with_the_two_commands_and_its_links_resolve() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    # The two commands a newcomer needs come before any other section's detail.
    two = readme.index("## Two commands")
    assert readme.index("make run    #") > two and readme.index("make test   #") > two
    assert two < readme.index("## Three ways to run it")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 10
    for link in links:
        if not link.startswith("http"):
            assert (PROJECT / link).exists(), link
    # Every hand-written page of the site is in the README's table of contents: a new page
    # is not found from the repository's front page unless it is listed there.
    pages = {str(p.relative_to(PROJECT)) for p in _hand_written()}
    assert pages - set(links) == set(), sorted(pages - set(links))
