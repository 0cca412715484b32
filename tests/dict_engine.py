"""A first stage and document store over a plain Python dict, in one file: what an adapter to another engine is.

Nothing in ``src/`` knows this file. The tests plug it into ``Pipeline``, ``crossrank search
--first-stage tests/dict_engine.py:DictEngine``, ``crossrank eval --first-stage ... --rerank`` and
the server's ``POST /v1/search``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.retrieve.protocols import Retrieved

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "dl19" / "corpus.jsonl"
_WORD = re.compile(r"[a-z0-9]+")


class DictEngine:
    """Scores a document by how often the query's words occur in it, over ``{doc_id: record}``."""

    name = "dict-engine"

    def __init__(self, docs: dict[str, dict[str, Any]] | None = None) -> None:
        if docs is None:
            docs = {}
            for line in CORPUS.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                docs[str(rec["_id"])] = {"title": rec.get("title", ""), "text": rec["text"]}
        self.docs = docs

    def __len__(self) -> int:
        return len(self.docs)

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        counts = {i: Counter(_WORD.findall(f"{d['title']} {d['text']}".lower())) for i, d in self.docs.items()}
        out = []
        for query in queries:
            words = set(_WORD.findall(query.lower()))
            scored = [(i, sum(c[w] for w in words)) for i, c in counts.items()]
            best = sorted((s for s in scored if s[1] > 0), key=lambda s: (-s[1], s[0]))[:k]
            out.append(Retrieved(tuple(i for i, _ in best), np.array([s for _, s in best], dtype=np.float32)))
        return out

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return [{"id": i, **self.docs[i]} if i in self.docs else None for i in ids]
