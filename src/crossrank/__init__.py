"""crossrank: retrieve-and-rerank search built around cross-encoders.

The public API is flat and small; everything else lives in private or sub-modules.
``import crossrank`` stays light: onnxruntime, torch and the web stack load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrank.errors import (
    ConfigError,
    CrossrankError,
    InputError,
    MissingDependencyError,
    ModelError,
    ModelNotFoundError,
)
from crossrank.ranking import Hit, Ranking, ScoredPairs
from crossrank.rerank.config import ScoringConfig

if TYPE_CHECKING:
    from crossrank.rerank.cross_encoder import CrossEncoder

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrossEncoder",
    "CrossrankError",
    "Hit",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "ModelNotFoundError",
    "Ranking",
    "ScoredPairs",
    "ScoringConfig",
    "__version__",
]

_LAZY = {"CrossEncoder": "crossrank.rerank.cross_encoder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossrank' has no attribute {name!r}")
