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
    from crossrank.pipeline import Pipeline, SearchHit, SearchResult
    from crossrank.rerank.cross_encoder import CrossEncoder
    from crossrank.retrieve.bm25 import BM25Settings
    from crossrank.retrieve.embed import BiEncoder
    from crossrank.retrieve.index import Index

from crossrank._version import __version__

__all__ = [
    "BM25Settings",
    "BiEncoder",
    "ConfigError",
    "CrossEncoder",
    "CrossrankError",
    "Hit",
    "Index",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "ModelNotFoundError",
    "Pipeline",
    "Ranking",
    "ScoredPairs",
    "ScoringConfig",
    "SearchHit",
    "SearchResult",
    "__version__",
]

_LAZY = {
    "CrossEncoder": "crossrank.rerank.cross_encoder",
    "BiEncoder": "crossrank.retrieve.embed",
    "BM25Settings": "crossrank.retrieve.bm25",
    "Index": "crossrank.retrieve.index",
    "Pipeline": "crossrank.pipeline",
    "SearchHit": "crossrank.pipeline",
    "SearchResult": "crossrank.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossrank' has no attribute {name!r}")
