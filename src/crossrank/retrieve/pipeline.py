"""Deprecated: the pipeline sits above both stages now, in :mod:`crossrank.pipeline`.

``from crossrank.retrieve.pipeline import Pipeline`` keeps working with a ``DeprecationWarning``;
import from ``crossrank`` (``crossrank.Pipeline``) or :mod:`crossrank.pipeline` instead.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__: list[str] = []  # nothing lives here any more


def __getattr__(name: str) -> Any:
    # looked up at call time: retrieve/ imports nothing from the layer above it
    pipeline = importlib.import_module("crossrank.pipeline")
    if name.startswith("__") or not hasattr(pipeline, name):
        raise AttributeError(f"module 'crossrank.retrieve.pipeline' has no attribute {name!r}")
    warnings.warn(
        f"crossrank.retrieve.pipeline.{name} moved to crossrank.pipeline.{name}; import it from there "
        "(or from crossrank)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(pipeline, name)
