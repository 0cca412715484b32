"""The small set of frozen value types that carry results through crossrank."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Hit", "Ranking", "ScoredPairs"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document.

    Attributes:
        doc_id: the record's ``id`` (or ``_id``), or the input position as a string for plain texts.
        score: the relevance score; higher means more relevant.
        index: position of the document in the caller's input list.
        text: the scored text, when the caller asked for it.
        document: the caller's original record, carried through untouched (``None`` for plain strings).
        truncated: whether the pair was cut to the model's ``max_length``.
    """

    doc_id: str
    score: float
    index: int
    text: str | None = None
    document: Mapping[str, Any] | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Ranking:
    """Documents ranked for one query, best first, with ties kept in input order.

    Attributes:
        hits: the ranked hits; doc ids are unique.
        query_id: the query's id, when it has one.
        num_truncated: how many of the scored pairs were cut to ``max_length``.
    """

    hits: tuple[Hit, ...]
    query_id: str | None = None
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.hits)

    def doc_ids(self) -> list[str]:
        """Return the doc ids in rank order."""
        return [h.doc_id for h in self.hits]


@dataclass(frozen=True, slots=True)
class ScoredPairs:
    """Scores of a list of pairs, with what happened to each pair on the way.

    Attributes:
        scores: float32, shape ``(n,)`` for one-logit models or ``(n, num_labels)``, input order.
        truncated: bool, shape ``(n,)``: the pair was cut to ``max_length``.
        num_tokens: int32, shape ``(n,)``: tokens the model read for the pair (for windows, all windows).
    """

    scores: npt.NDArray[np.float32]
    truncated: npt.NDArray[np.bool_]
    num_tokens: npt.NDArray[np.int32] = field(repr=False)

    @property
    def num_truncated(self) -> int:
        """Return how many pairs were truncated."""
        return int(self.truncated.sum())
