"""The two plug points of stage 1: a first stage returns document ids and scores, a store returns texts.

Anything with a ``retrieve(queries, k)`` method returning :class:`Retrieved` lists is a
:class:`FirstStage`; anything with a ``get(ids)`` method returning records is a
:class:`DocumentStore`. :class:`~crossrank.pipeline.Pipeline` needs one of each, so a
Postgres, Elasticsearch or OpenSearch first stage is one adapter file. The index's own first
stages are in :mod:`crossrank.retrieve.retrievers`; a dict-backed fake for tests is in
:mod:`crossrank.retrieve.testing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from crossrank.errors import InputError

__all__ = ["DocumentStore", "FirstStage", "Retrieved", "check_request", "stage_name"]


@dataclass(frozen=True, slots=True)
class Retrieved:
    """One query's first-stage candidates, best first.

    Attributes:
        doc_ids: the documents' ids, unique.
        scores: float32, one per id, descending (higher = more relevant).
    """

    doc_ids: tuple[str, ...]
    scores: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.scores):
            raise InputError(
                f"Retrieved needs one score per id (got {len(self.doc_ids)} ids, {len(self.scores)} scores)"
            )

    def __len__(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, float]]) -> Retrieved:
        """Return the candidates of ``(doc_id, score)`` pairs, already best first."""
        items = list(pairs)
        return cls(tuple(str(d) for d, _ in items), np.array([s for _, s in items], dtype=np.float32))


@runtime_checkable
class FirstStage(Protocol):
    """Finds each query's best ``k`` documents: their ids and scores.

    A first stage may also have a ``name`` (``"bm25"``, ``"postgres"``, ...), which search results
    report as their ``retriever``.
    """

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return one :class:`Retrieved` per query, in order: at most ``k`` unique ids, scores descending.

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
        """
        ...


@runtime_checkable
class DocumentStore(Protocol):
    """Returns the stored records of documents by id."""

    def get(self, ids: Sequence[str]) -> Sequence[Mapping[str, Any] | None]:
        """Return the records ``{"id", "title", "text", "metadata"?}`` of ``ids``, in order (``None``: unknown id)."""
        ...


def check_request(queries: Sequence[str], k: int) -> None:
    """Check the arguments of :meth:`FirstStage.retrieve`, the same way for every first stage.

    Raises:
        InputError: ``queries`` is one string, or ``k`` < 1.
    """
    if isinstance(queries, str):
        raise InputError("pass a list of queries, not one string")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be >= 1 (got {k!r})")


def stage_name(stage: object) -> str:
    """Return the name a first stage reports: its ``name`` attribute, else its class's name."""
    name = getattr(stage, "name", None)
    return name if isinstance(name, str) and name else type(stage).__name__
