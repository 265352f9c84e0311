"""The reference pages, generated from the code at build time: the CLI from its argparse parser,
every configuration key from the packaged YAML (its comments are the meanings), the Delta tables
from ``fruits/sinks/tables.py``. One source each: nobody edits a copy, so none can drift.

Pure functions (text in, Markdown out) so that tests/test_docs.py can feed them a parser or a
YAML with one more option or key; ``docs/gen/pages.py`` calls them during ``mkdocs build``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import re
import tokenize
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "YamlKey",
    "cli_reference",
    "config_reference",
    "missing_meanings",
    "schema_comments",
    "table_constants",
    "tables_reference",
    "yaml_intros",
    "yaml_keys",
]


# -- the CLI --------------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the parser's order."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                found.append((name, helps.get(name, ""), child))
    return found


def _cell(text: object) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _prose(text: object) -> str:
    """Free text (a help string, a comment) for a table cell: ``<Class>`` is shown, not taken
    for an HTML tag."""
    return _cell(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            name = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                name += f" `{action.metavar or action.dest.upper()}`"
        else:
            name = f"`{action.metavar or action.dest}`"
            if action.nargs in ("+", "*"):
                name += "..."
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            default = "off (a flag)"
        elif action.default is None or action.default is argparse.SUPPRESS:
            default = (
                "required" if action.required or not action.option_strings else "\u2013"
            )  # an en dash: no value
        else:
            default = f"`{action.default}`"
        details = action.help or ""
        if action.choices:
            details += f" (one of: {', '.join(map(str, action.choices))})"
        if action.nargs == "append" or isinstance(action, argparse._AppendAction):
            details += " (repeatable)"
        rows.append(f"| {_cell(name)} | {_cell(default)} | {_prose(details)} |")
    return rows


def _command_section(
    path: list[str], summary: str, parser: argparse.ArgumentParser, level: int
) -> list[str]:
    lines = [f"{'#' * level} `{' '.join(path)}`", ""]
    if summary:
        lines += [_prose(summary[0].upper() + summary[1:]) + ".", ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = _option_rows(parser)
    if rows:
        lines += ["| option | default | what it does |", "|---|---|---|", *rows, ""]
    for name, helptext, child in _subcommands(parser):
        lines += _command_section([*path, name], helptext, child, level + 1)
    return lines


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """Every subcommand (nested ones too) with its usage and each option's help and default."""
    lines = [
        "# Command line",
        "",
        "Generated from the argument parser of `fruits/cli.py` when the site is built: every",
        "subcommand, each option with its help and default. The last line a command prints on",
        "stdout is JSON; progress goes to stderr. A bad setup prints one line, `fruits: error: …`,",
        "and exits 2.",
        "",
        "| command | does |",
        "|---|---|",
    ]
    commands = _subcommands(parser)
    for name, helptext, _ in commands:
        lines.append(f"| [`fruits {name}`](#fruits-{name}) | {_prose(helptext)} |")
    lines.append("")
    for name, helptext, child in commands:
        lines += _command_section([parser.prog, name], helptext, child, 2)
    return "\n".join(lines).rstrip() + "\n"


# -- the configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class YamlKey:
    """One key of a config YAML: its dotted name, its value as the file writes it, the comments
    that explain it (the block above it and the one beside it) and whether those are only the
    comment of the key above it, which it shares (no comment of its own)."""

    name: str
    value: str
    comment: str
    shared: bool = False


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def _split_comment(rest: str) -> tuple[str, str]:
    """A value and its trailing comment (a ``#`` outside quotes, after a space)."""
    quote = ""
    for i, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def _parse(text: str) -> tuple[dict[str, YamlKey], dict[str, str]]:
    keys: dict[str, YamlKey] = {}
    intros: dict[str, str] = {}
    section = ""
    first = False  # the next key is its section's first
    block: list[str] = []
    shared = ""  # the block comment the key above had (no comment beside it), for the next one
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped:
            block, shared = [], ""
            continue
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if match is None:
            block, shared = [], ""
            continue
        value, beside = _split_comment(match["rest"])
        indent = len(match["indent"])
        if indent == 0 and not value:  # a section
            section, first, block, shared = match["key"], True, [], ""
            continue
        name = f"{section}.{match['key']}" if indent else match["key"]
        if indent == 0:
            section = ""
        above = " ".join(block)
        if first and above and beside:
            # A section's first key with a comment of its own beside it: the block above
            # introduces the section.
            intros[section], above = above, ""
        first = False
        if above or beside:
            keys[name] = YamlKey(name, value, " ".join(p for p in (above, beside) if p))
        else:
            keys[name] = YamlKey(name, value, shared, shared=bool(shared))
        shared = "" if beside else above or shared
        block = []
    return keys, intros


def yaml_keys(text: str) -> dict[str, YamlKey]:
    """The keys of one of the project's config files (top-level keys and sections of keys),
    each with its comments. A comment block directly above a key is its meaning; a key with
    none that follows such a key without a blank line shares it (``executor_memory`` and
    ``executor_cores`` under one comment)."""
    return _parse(text)[0]


def yaml_intros(text: str) -> dict[str, str]:
    """Each section's introduction: the comment above its first key when that key has its own
    comment beside it."""
    return _parse(text)[1]


def _field_names(config_cls: type[Any]) -> list[str]:
    """Every leaf key of the configuration dataclasses, dotted (``stream.discovery``)."""
    hints = typing.get_type_hints(config_cls)
    names = []
    for item in dataclasses.fields(config_cls):
        if item.name == "source":
            continue
        hint = hints[item.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names += [f"{item.name}.{f.name}" for f in dataclasses.fields(hint)]
        else:
            names.append(item.name)
    return names


def _default(config_cls: type[Any], name: str) -> str:
    """The built-in default of a dotted key, as YAML would write it."""
    value: Any = config_cls()
    for part in name.split("."):
        value = getattr(value, part)
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _meaning(name: str, files: Mapping[str, Mapping[str, YamlKey]]) -> str:
    """The first file's own comment on ``name``, else the first one it shares with the key
    above it."""
    for own in (True, False):
        for keys in files.values():
            key = keys.get(name)
            if key is not None and key.comment and key.shared != own:
                return key.comment
    return ""


def _same(written: str | None, value: str) -> bool:
    """Two YAML scalars that mean the same (``"1 hour"`` and ``1 hour``)."""
    if written is None:
        return True
    try:
        return bool(yaml.safe_load(written) == yaml.safe_load(value))
    except yaml.YAMLError:
        return written == value


def missing_meanings(
    config_cls: type[Any], files: Mapping[str, Mapping[str, YamlKey]]
) -> list[str]:
    """The configuration keys that no packaged YAML explains with a comment."""
    return [n for n in _field_names(config_cls) if not _meaning(n, files)]


def _code(value: str) -> str:
    return f"`{_cell(value)}`" if value else "\u2013"  # an en dash: no value


def config_reference(config_cls: type[Any], files: Mapping[str, str]) -> str:
    """One table per section: every key of ``config_cls`` with its default (the first file's
    value, else the built-in one), its meaning (the comments of the first file that comments
    it) and the other files' values where they differ. ``files``: name -> YAML text, the
    embedded default first."""
    parsed = {name: yaml_keys(text) for name, text in files.items()}
    first, *others = parsed
    intros = yaml_intros(files[first])
    names = _field_names(config_cls)
    # The embedded default's order, then keys it does not write (built-in defaults).
    ordered = [n for n in parsed[first] if n in names] + [
        n for n in names if n not in parsed[first]
    ]
    lines = [
        "# Configuration",
        "",
        "Generated from the packaged YAML files (`fruits/conf/`, linked as `conf/`) and the",
        "dataclasses of `fruits/config.py` when the site is built. `--config local|azurite|",
        "databricks` (or a path; default `$FRUITS_CONFIG`, else `local`) picks a file; any key",
        "can be set from the environment as `FRUITS__SECTION__KEY=value`",
        '(`FRUITS__STREAM__TRIGGER_INTERVAL="2 seconds"`), and `FRUITS_ROOT`, `FRUITS_WEIGHTS`,',
        "`FRUITS_DATA` set `root`, `featurizer.weights`, `training.data`. An unknown key, a value",
        "of the wrong type, an unset `${NAME}` variable a value names or a `<placeholder>` left in",
        "a value stops the command at start with one line naming the key.",
        "",
        f"*default* is `{first}.yaml`'s value (or, in italics, the built-in default of a key it",
        "does not write); the other columns show a file's value only where it differs.",
        "",
    ]
    sections: dict[str, list[str]] = {}
    for name in ordered:
        section = name.split(".")[0] if "." in name else "(top level)"
        sections.setdefault(section, []).append(name)
    header = "| key | default | meaning | " + " | ".join(f"{o}.yaml" for o in others) + " |"
    rule = "|---|---|---|" + "---|" * len(others)
    for section, members in sections.items():
        lines += [f"## `{section}`" if section != "(top level)" else "## Top level", ""]
        intro = intros.get(section, "")
        if intro:
            lines += [_prose(intro), ""]
        lines += [header, rule]
        for name in members:
            built_in = _default(config_cls, name)
            if name in parsed[first]:
                default = parsed[first][name].value or "null"
                shown = _code(default)
            else:
                default = built_in
                shown = f"*{_code(built_in)}*"
            cells = []
            for other in others:
                value = parsed[other][name].value if name in parsed[other] else None
                cells.append("" if _same(value, default) else _code(value or "null"))
            meaning = _prose(_meaning(name, parsed)) or "**(no comment in any packaged YAML)**"
            lines.append(f"| `{name}` | {shown} | {meaning} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- the tables ---------------------------------------------------------------------------------


def schema_comments(source: str) -> dict[tuple[str, str], str]:
    """``(table constant, column) -> comment`` from the source of ``fruits/sinks/tables.py``:
    the comment lines directly above a ``pa.field(...)`` and the one beside it."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not isinstance(key, ast.Name):
                continue
            for call in ast.walk(value):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "field"
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                ):
                    continue
                above: list[str] = []
                row = call.lineno - 1
                while row >= 1 and lines[row - 1].strip().startswith("#"):
                    above.insert(0, comments.get(row, ""))
                    row -= 1
                beside = comments.get(call.end_lineno or call.lineno, "")
                if beside and lines[(call.end_lineno or call.lineno) - 1].strip().startswith("#"):
                    beside = ""
                text = " ".join(p for p in (*above, beside) if p)
                if text:
                    found[(key.id, str(call.args[0].value))] = text
    return found


def table_constants(source: str) -> dict[str, tuple[str, str]]:
    """``table name -> (its constant, the comment above it)`` from ``NAME = "table"`` lines."""
    lines = source.splitlines()
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            above: list[str] = []
            row = node.lineno - 1
            while row >= 1 and lines[row - 1].strip().startswith("#"):
                above.insert(0, lines[row - 1].strip().lstrip("#").strip())
                row -= 1
            found[node.value.value] = (node.targets[0].id, " ".join(above))
    return found


def tables_reference(schemas: Mapping[str, Any], source: str) -> str:
    """Each table of ``schemas`` (name -> ``pyarrow.Schema``): column, Arrow type, nullable and
    the comments ``source`` (the module defining them) writes beside or above each column."""
    comments = schema_comments(source)
    constants = table_constants(source)
    lines = [
        "# Delta tables",
        "",
        "Generated from `SCHEMAS` in `fruits/sinks/tables.py` when the site is built: both Delta",
        "writers (delta-rs and Spark's) create and append exactly these columns; a column that is",
        "not nullable is `NOT NULL` in the table. Times are UTC, to the microsecond.",
        "",
    ]
    for table, schema in schemas.items():
        constant, note = constants.get(table, ("", ""))
        lines += [f"## `{table}`", ""]
        if note:
            lines += [_prose(note), ""]
        lines += ["| column | Arrow type | nullable | note |", "|---|---|---|---|"]
        for column in schema:
            text = comments.get((constant, column.name), "")
            nullable = "yes" if column.nullable else "**no**"
            lines.append(
                f"| `{column.name}` | `{_cell(column.type)}` | {nullable} | {_prose(text)} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
