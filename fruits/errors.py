"""The project's exception hierarchy.

Bad *data* is never an exception here (it becomes a quarantine row or a counted, reported
skip); these are for a broken setup or a broken system, and the CLI prints them as one line.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "FruitsError", "ModelNotFoundError", "RegistryError"]


class FruitsError(Exception):
    """Base class: the CLI prints ``fruits: error: <message>`` and exits 2."""


class ConfigError(FruitsError):
    """A configuration value is missing, unknown or unusable; the message names the key."""


class DataError(FruitsError):
    """An input location cannot be used at all (missing, unreadable, no classes)."""


class RegistryError(FruitsError):
    """The model registry is inconsistent or a version cannot be loaded."""


class ModelNotFoundError(RegistryError):
    """No model version is promoted yet, or the asked-for version does not exist."""
