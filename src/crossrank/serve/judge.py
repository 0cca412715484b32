"""Judging: a person labels the pooled results of both stages, blind, into a growing TREC qrels file.

For each query the pool is the first stage's top ``depth`` and the reranked top ``depth``, merged,
without duplicates, and shuffled in an order fixed by the query's id: the judge cannot tell which
system found what, and a reload shows the same order. Each judgment rewrites the qrels file
atomically (``query 0 doc grade``, the TREC layout every crossrank command reads), so what is
judged is on disk at once, and a sidecar ``<qrels>.judging.json`` records who judged, when, the
pool depth, the model and first stage, and the skipped documents. A session started on an existing
file resumes where it stopped.

Grades: 2 relevant, 1 partly relevant, 0 not relevant; a skipped document is left out of the
qrels (unjudged, as ``trec_eval`` treats it) and not shown again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import ConfigError, InputError
from crossrank.io import read_beir_queries, read_qrels
from crossrank.retrieve.durable import atomic_write

__all__ = ["GRADES", "JudgeSession", "judged_query_texts", "read_judge_queries", "typed_query_id"]

#: the grades a judge gives, and their names
GRADES = {2: "relevant", 1: "partly relevant", 0: "not relevant"}
SKIP = -1


def typed_query_id(text: str) -> str:
    """The id a query typed in the page gets: stable for the same text."""
    return "typed-" + hashlib.sha1(" ".join(text.split()).encode()).hexdigest()[:10]


@dataclass
class _Query:
    query_id: str
    text: str
    pool: list[str] | None = None  # doc ids, in the order shown


class JudgeSession:
    """The judgments of one person, kept on disk as they are made.

    Args:
        qrels: the TREC qrels file to write (created, or resumed when it exists).
        queries: ``{query_id: text}`` to judge, in order; more can be typed in the page.
        depth: how many results of each stage go into a query's pool.
        judge: who judges (recorded in the sidecar).
        describe: what else the sidecar records (model, first stage).

    Raises:
        ConfigError: the qrels file or its folder cannot be written, or the existing file is broken.
    """

    def __init__(
        self,
        qrels: str | os.PathLike[str],
        queries: Mapping[str, str] | None = None,
        *,
        depth: int = 10,
        judge: str = "",
        describe: Mapping[str, Any] | None = None,
    ) -> None:
        if depth < 1:
            raise ConfigError(f"the judging pool depth must be >= 1 (got {depth})")
        self.path = Path(qrels)
        self.sidecar = self.path.with_name(self.path.name + ".judging.json")
        self.depth = depth
        self.judge = judge or os.environ.get("USER", "") or "anonymous"
        self._lock = threading.Lock()
        self.grades: dict[str, dict[str, int]] = {}
        self.skipped: dict[str, set[str]] = {}
        self._meta: dict[str, Any] = {"pool_depth": depth, **(describe or {}), "sessions": [], "queries": {}}
        if self.path.exists():
            try:
                self.grades = read_qrels(self.path)
            except InputError as e:
                raise ConfigError(f"cannot resume judging from {self.path}: {e}") from None
        if self.sidecar.exists():
            try:
                old = json.loads(self.sidecar.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot resume judging: {self.sidecar} is not readable JSON ({e})") from None
            self._meta.update({k: v for k, v in old.items() if k in ("sessions", "queries", "judgments")})
            self.skipped = {q: set(v) for q, v in old.get("skipped", {}).items()}
        # the given queries in their order, then those typed in earlier sessions; pools as built then
        self._queries: dict[str, _Query] = {str(q): _Query(str(q), str(t)) for q, t in (queries or {}).items()}
        for qid, info in self._meta["queries"].items():
            known = self._queries.setdefault(qid, _Query(qid, info["text"]))
            known.pool = info.get("pool")
        self._meta["sessions"].append({"judge": self.judge, "started": _now(), "pool_depth": depth})
        self._save()  # an unwritable place fails here, at start-up, not at the first judgment

    @classmethod
    def from_queries_file(
        cls, qrels: str | os.PathLike[str], queries: str | os.PathLike[str], **kw: Any
    ) -> JudgeSession:
        """Start a session over a file's queries: BEIR ``queries.jsonl``, or a request log (JSONL
        records with a ``query`` field, as ``crossrank serve`` logs them; repeats judged once)."""
        return cls(qrels, read_judge_queries(queries), **kw)

    # ------------------------------------------------------------------ state

    def queries(self) -> list[dict[str, Any]]:
        """Each query with how much of its pool is judged (``total`` is None until its pool is built)."""
        with self._lock:
            return [self._summary(q) for q in self._queries.values()]

    def _summary(self, q: _Query) -> dict[str, Any]:
        done = len(self.grades.get(q.query_id, {})) + len(self.skipped.get(q.query_id, set()))
        total = len(q.pool) if q.pool is not None else None
        if q.pool is not None:
            seen = self.grades.get(q.query_id, {}).keys() | self.skipped.get(q.query_id, set())
            done = sum(1 for d in q.pool if d in seen)
        return {"id": q.query_id, "text": q.text, "judged": done, "total": total,
                "done": total is not None and done >= total}  # fmt: skip

    def add_query(self, text: str) -> str:
        """Add a typed query; return its id (the same text gives the same id)."""
        text = " ".join(str(text).split())
        if not text:
            raise InputError("the query is empty; type a query to judge")
        qid = typed_query_id(text)
        with self._lock:
            if qid not in self._queries:
                self._queries[qid] = _Query(qid, text)
                self._meta["queries"][qid] = {"text": text}
                self._save()
        return qid

    def needs_pool(self, query_id: str) -> str | None:
        """Return the query's text when its pool is still to be built, else None."""
        with self._lock:
            q = self._get(query_id)
            return q.text if q.pool is None else None

    def set_pool(self, query_id: str, first_stage: list[str], reranked: list[str]) -> None:
        """Pool the two stages' top ``depth`` for a query, blind and in a fixed shuffled order."""
        pool = list(dict.fromkeys([*first_stage[: self.depth], *reranked[: self.depth]]))
        random.Random(query_id).shuffle(pool)
        with self._lock:
            q = self._get(query_id)
            if q.pool is None:
                q.pool = pool
                self._meta["queries"].setdefault(query_id, {"text": q.text})["pool"] = pool
                self._save()

    def pool(self, query_id: str) -> list[tuple[str, int | None]]:
        """The query's pool in the order shown, each with its grade (None: not judged; -1: skipped)."""
        with self._lock:
            q = self._get(query_id)
            if q.pool is None:
                raise InputError(f"query {query_id!r} has no pool yet")
            grades, skipped = self.grades.get(query_id, {}), self.skipped.get(query_id, set())
            return [(d, grades.get(d, SKIP if d in skipped else None)) for d in q.pool]

    def judge_document(self, query_id: str, doc_id: str, grade: int) -> dict[str, Any]:
        """Record a grade (2, 1, 0) or a skip (-1); the qrels file is rewritten at once."""
        if grade not in (*GRADES, SKIP):
            raise InputError(f"grade must be 2 (relevant), 1 (partly), 0 (not relevant) or -1 (skip); got {grade}")
        with self._lock:
            q = self._get(query_id)
            if q.pool is None or doc_id not in q.pool:
                raise InputError(f"document {doc_id!r} is not in the pool of query {query_id!r}")
            self.grades.setdefault(query_id, {}).pop(doc_id, None)
            self.skipped.setdefault(query_id, set()).discard(doc_id)
            if grade == SKIP:
                self.skipped[query_id].add(doc_id)
            else:
                self.grades[query_id][doc_id] = grade
            self._meta["judgments"] = self._meta.get("judgments", 0) + 1
            self._meta["sessions"][-1]["last"] = _now()
            self._save()
            return self._summary(q)

    def _get(self, query_id: str) -> _Query:
        q = self._queries.get(query_id)
        if q is None:
            raise InputError(f"unknown query {query_id!r}; pick one of the listed queries or type one")
        return q

    # ------------------------------------------------------------------ disk

    def _save(self) -> None:
        lines = [f"{q} 0 {d} {g}\n" for q, docs in self.grades.items() for d, g in docs.items()]
        meta = {
            **self._meta,
            "qrels": self.path.name,
            "grades": {str(k): v for k, v in GRADES.items()},
            "skipped": {q: sorted(v) for q, v in self.skipped.items() if v},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, "".join(lines))
            atomic_write(self.sidecar, json.dumps(meta, indent=2) + "\n")
        except OSError as e:
            raise ConfigError(
                f"cannot write the judgments to {self.path} ({e.strerror or e}); choose a writable --judge path"
            ) from None


def judged_query_texts(qrels: str | os.PathLike[str]) -> dict[str, str]:
    """Return ``{query_id: text}`` of the queries judged into ``qrels``, from the sidecar the judge page wrote.

    Raises:
        InputError: there is no readable sidecar beside ``qrels`` (then pass the queries file).
    """
    p = Path(qrels)
    sidecar = p.with_name(p.name + ".judging.json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        return {str(q): str(info["text"]) for q, info in meta.get("queries", {}).items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise InputError(
            f"no judge-page sidecar {sidecar.name} beside {p} to read the queries' texts from; pass --queries FILE"
        ) from None


def read_judge_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return ``{query_id: text}`` from a BEIR queries file or a request log (as ``from_queries_file``).

    Raises:
        InputError: the file cannot be read, or holds no query.
    """
    p = Path(path)
    try:
        first = next((line for line in p.open(encoding="utf-8") if line.strip()), "")
    except OSError as e:
        raise InputError(f"cannot read the queries to judge from {p} ({e.strerror or e})") from None
    try:
        head = json.loads(first) if first else {}
    except json.JSONDecodeError:
        head = {}
    if isinstance(head, dict) and "query" in head and "_id" not in head:
        out: dict[str, str] = {}
        for n, line in enumerate(p.open(encoding="utf-8"), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                text = " ".join(str(rec["query"]).split())
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{p}:{n}: not a request-log record with a query field") from None
            if text:
                out.setdefault(str(rec.get("query_id") or typed_query_id(text)), text)
    else:
        out = read_beir_queries(p)
    if not out:
        raise InputError(f"{p} holds no queries to judge")
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
