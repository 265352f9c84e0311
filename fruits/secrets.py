"""Keeping secrets out of what people and tables see.

Connection strings, account keys and SAS tokens come only from the environment, a secret scope
or a managed identity. They must never reach a log line, a report, an exception shown to a user
or a Delta table, so every SDK error message is passed through :func:`redact` before it is
logged or re-raised, and the Azure SDKs' own log records go through :func:`redact_sdk_logs`.

    >>> redact("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=")
    'Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=***'
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

__all__ = ["MASK", "redact", "redact_sdk_logs"]

MASK = "***"

# A `name=value` (or `name: value`, or URL-encoded `name%3Dvalue`) whose name's last word is
# one of these is a secret: AccountKey, SharedAccessKey, SharedAccessSignature, sig,
# client_secret, accessToken, password... but not SharedAccessKeyName or AccountName.
_SECRET_WORDS = frozenset(
    {"key", "secret", "password", "passwd", "pwd", "token", "signature", "sig", "sas", "credential"}
)
_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z][A-Za-z0-9_\-]*)"
    r"(?P<quote>[\"']?)"  # a JSON or Python-repr key: "client_secret": "..."
    r"(?P<sep>\s*(?:=|:|%3[Dd])\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s;&,\"'<>{}\[\]]+)"
)
# Authorization-header shapes: `SharedAccessSignature sr=...&sig=...`, `Bearer <jwt>`.
_SCHEMES = re.compile(r"\b(?P<scheme>SharedAccessSignature|Bearer|Basic)\s+[^\s;,\"']+")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _is_secret_name(name: str) -> bool:
    words = _WORDS.findall(name.replace("-", "_"))
    return bool(words) and words[-1].lower() in _SECRET_WORDS


def _mask_assignment(match: re.Match[str]) -> str:
    if not _is_secret_name(match["name"]):
        return match[0]
    return f"{match['name']}{match['quote']}{match['sep']}{MASK}"


def redact(text: str, *, known: Iterable[str] = ()) -> str:
    """``text`` with secret values masked: ``key=value`` pairs whose key names a secret, SAS and
    bearer tokens, and any literal occurrence of the ``known`` secrets (6 characters or more)."""
    for secret in sorted((k for k in known if k and len(k) >= 6), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _SCHEMES.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (which may be replaced after set-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_INSTALLED: set[str] = set()


def redact_sdk_logs(logger_name: str = "azure", *, level: int = logging.WARNING) -> None:
    """Route an SDK's log records (``azure`` and its children) through :func:`redact` to
    stderr, instead of Python's unfiltered last-resort handler. Idempotent."""
    if logger_name in _INSTALLED:
        return
    handler = _StderrHandler()
    handler.setLevel(level)
    handler.setFormatter(_RedactingFormatter("[%(name)s %(levelname)s] %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.propagate = False  # a root handler would print the record unredacted
    _INSTALLED.add(logger_name)
