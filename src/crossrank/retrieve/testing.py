"""A first stage and document store over a plain ``dict``, for tests and examples.

:class:`DictFirstStage` is what :class:`~crossrank.retrieve.protocols.FirstStage` and
:class:`~crossrank.retrieve.protocols.DocumentStore` ask for and nothing more, as ``httpx``
ships its ``MockTransport``: use it to test code that takes a first stage without building an
index, or as the starting point of an adapter to another search engine.

Example:
    >>> stage = DictFirstStage({"d1": "cats purr", "d2": "dogs bark", "d3": "cats chase dogs"})
    >>> found = stage.retrieve(["cats"], k=2)[0]
    >>> found.doc_ids, found.scores.tolist()
    (('d1', 'd3'), [1.0, 1.0])
    >>> del stage.documents["d1"]
    >>> stage.retrieve(["cats"], k=2)[0].doc_ids
    ('d3',)
    >>> stage.get(["d2", "d1"])
    [{'id': 'd2', 'title': '', 'text': 'dogs bark'}, None]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from crossrank.retrieve.protocols import Retrieved, check_request

__all__ = ["DictFirstStage"]

_WORD = re.compile(r"\w+")


class DictFirstStage:
    """A first stage and document store over ``{doc_id: text}`` (or ``{doc_id: record}``).

    A document's score is the number of distinct query words it contains (lower-cased); documents
    with none are not returned; ties go to the smaller id. Changing ``documents`` changes what
    later calls see: a removed id is never returned again.

    Args:
        documents: ``{doc_id: text}``, or ``{doc_id: {"title"?, "text", "metadata"?}}``; kept, not copied.
        name: the name search results report as their first stage.
    """

    def __init__(self, documents: MutableMapping[str, Any], *, name: str = "dict") -> None:
        self.documents = documents
        self.name = name

    def __len__(self) -> int:
        return len(self.documents)

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` documents by words shared with it (ids and scores, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
        """
        check_request(queries, k)
        words = {doc_id: _words(self._record(doc_id)) for doc_id in self.documents}
        out = []
        for query in queries:
            q = _words({"text": query})
            scored = [(doc_id, len(q & w)) for doc_id, w in words.items()]
            best = sorted((s for s in scored if s[1] > 0), key=lambda s: (-s[1], s[0]))[:k]
            out.append(Retrieved.of((doc_id, float(score)) for doc_id, score in best))
        return out

    def get(self, ids: Sequence[str]) -> list[Mapping[str, Any] | None]:
        """Return the records of ``ids`` (``id``, ``title``, ``text``, ``metadata``?), ``None`` for unknown ids."""
        return [self._record(i) if i in self.documents else None for i in ids]

    def _record(self, doc_id: str) -> dict[str, Any]:
        value = self.documents[doc_id]
        if isinstance(value, Mapping):
            rec: dict[str, Any] = {
                "id": doc_id,
                "title": str(value.get("title") or ""),
                "text": str(value.get("text") or ""),
            }
            if value.get("metadata"):
                rec["metadata"] = dict(value["metadata"])
            return rec
        return {"id": doc_id, "title": "", "text": str(value)}


def _words(record: Mapping[str, Any]) -> set[str]:
    return set(_WORD.findall(f"{record.get('title', '')} {record.get('text', '')}".lower()))
