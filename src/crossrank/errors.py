"""The crossrank exception tree.

Every error crossrank raises derives from :class:`CrossrankError` and also from the
matching builtin, so ``except ValueError`` keeps working for callers who do not know
crossrank's types. Messages say what was wrong, the value received and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CrossrankError",
    "IndexStateError",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "ModelNotFoundError",
    "ServerUnavailableError",
]


class CrossrankError(Exception):
    """Base class of every crossrank error."""


class ConfigError(CrossrankError, ValueError):
    """A setting has a value that is not allowed."""


class InputError(CrossrankError, ValueError):
    """A query, document, pair or input file is malformed."""


class IndexStateError(InputError):
    """An index folder is missing, incomplete, damaged, busy, or built differently from what was asked.

    It is an :class:`InputError` (and so a ``ValueError``): the index is an input the caller names.
    """


class ModelNotFoundError(CrossrankError, LookupError):
    """No model answers to the given name, path or hub id."""


class ModelError(CrossrankError, OSError):
    """A model folder or file exists but cannot be used (missing or corrupt files)."""


class MissingDependencyError(CrossrankError, ImportError):
    """An optional dependency that a feature needs is not installed."""


class ServerUnavailableError(CrossrankError, ConnectionError):
    """A server crossrank reads from (a Postgres first stage) cannot be reached, or went away mid-query."""
