"""Quieting other libraries' log records for the length of one call, without touching log levels.

crossrank never sets a logger's level or adds a handler: the application owns its logging. Where a
library logs generic advice on every call (ONNX Runtime's quantizer on the root logger, NNCF),
:func:`muted` drops those records with a filter on the loggers that create them, and removes the
filter when the call ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["muted"]


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


@contextmanager
def muted(*loggers: logging.Logger, below: int = logging.ERROR) -> Iterator[None]:
    """Drop records under ``below`` that ``loggers`` create while the block runs (their children's are kept)."""
    drop = _Below(below)
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
