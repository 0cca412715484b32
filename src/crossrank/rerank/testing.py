"""A public fake scorer for tests: deterministic, instant, and needs no model files.

Use it where a test needs a :class:`~crossrank.CrossEncoder` but not a model's judgement, as
httpx users reach for ``MockTransport``::

    from crossrank import CrossEncoder
    from crossrank.rerank.testing import FakeScorer

    ce = CrossEncoder(FakeScorer())
    ce.rerank("black cat", ["a dog", "the black cat sat"]).hits[0].index  # 1
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from crossrank.ranking import ScoredPairs

__all__ = ["FakeScorer"]

_WORD = re.compile(r"\w+")


class FakeScorer:
    """Score a pair by the query words found in the document, as a logit.

    The score is ``shared - 0.5`` where ``shared`` is the number of distinct lower-cased query
    words that occur in the document, so a document with every query word scores highest and one
    with none scores ``-0.5`` (sigmoid below 0.5). Token counts are words; nothing is truncated.

    Attributes:
        labels: ``("score",)``.
        calls: how many times :meth:`score` ran, and ``pairs`` how many pairs it scored in all.
    """

    labels: tuple[str, ...] = ("score",)

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.calls = 0
        self.pairs = 0

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> ScoredPairs:
        """Return ``(n, 1)`` float32 scores in input order."""
        self.calls += 1
        self.pairs += len(queries)
        shared = np.empty(len(queries), dtype=np.float32)
        tokens = np.empty(len(queries), dtype=np.int32)
        for i, (query, document) in enumerate(zip(queries, documents, strict=True)):
            words = set(_WORD.findall(document.lower()))
            asked = set(_WORD.findall(query.lower()))
            shared[i] = len(asked & words)
            tokens[i] = len(asked) + len(words)
        return ScoredPairs((shared - 0.5).reshape(-1, 1), np.zeros(len(queries), dtype=np.bool_), tokens)
