"""Stream a corpus (BEIR folder, JSONL file, or records) with checks, in bounded memory."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrank.documents import document_text
from crossrank.errors import InputError

__all__ = ["CorpusReport", "Doc", "read_corpus"]

OnError = Literal["raise", "skip"]

#: the fields of a record that crossrank reads; any other field goes into ``metadata``
_CORE = {"_id", "id", "title", "text", "metadata"}


@dataclass(frozen=True, slots=True)
class Doc:
    """One document of a corpus.

    Attributes:
        id: its unique id.
        title: its title ("" when none).
        text: its body.
        metadata: any other fields of the input record, carried through.
    """

    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        """Return what retrieval reads: the title and the text."""
        return document_text(self.title, self.text)

    def record(self) -> dict[str, Any]:
        """Return the document as a plain record."""
        out: dict[str, Any] = {"id": self.id, "title": self.title, "text": self.text}
        if self.metadata:
            out["metadata"] = self.metadata
        return out


@dataclass(slots=True)
class CorpusReport:
    """What reading a corpus did: how many records were read, kept, and skipped, and why.

    Attributes:
        read: records seen.
        kept: records passed on.
        skipped: reason -> count of records skipped (only with ``on_error="skip"``).
        examples: reason -> the first place it happened (``file:line``).
    """

    read: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return {"read": self.read, "kept": self.kept, "skipped": dict(self.skipped), "examples": self.examples}


def corpus_file(path: str | os.PathLike[str]) -> Path:
    """Return the JSONL file of a corpus given as a BEIR folder or a file.

    Raises:
        InputError: there is no such file or folder, or the folder has no ``corpus.jsonl``.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "corpus.jsonl").is_file():
            return p / "corpus.jsonl"
        raise InputError(f"{p} is a folder without corpus.jsonl; pass a BEIR folder or a JSONL file")
    if not p.is_file():
        raise InputError(f"corpus {p} does not exist; pass a BEIR folder or a JSONL file")
    return p


def read_corpus(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
    *,
    on_error: OnError = "raise",
    report: CorpusReport | None = None,
    seen: set[str] | None = None,
) -> Iterator[Doc]:
    """Yield the documents of a corpus one by one, checking each record.

    A record needs an id (``_id`` or ``id``) and a ``text`` string; ``title`` is optional; other
    fields go into ``metadata``. Bad records (invalid UTF-8 or JSON, missing fields, empty
    documents, repeated ids) raise :class:`InputError` naming the file and line, or, with
    ``on_error="skip"``, are skipped and counted in ``report``.

    Args:
        source: a BEIR folder, a JSONL file, or an iterable of records.
        on_error: ``"raise"`` or ``"skip"``.
        report: filled in as records are read.
        seen: ids already taken (they count as repeats); ids read here are added to it.

    Raises:
        InputError: a bad record, with ``on_error="raise"``.
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip' (got {on_error!r})")
    report = report if report is not None else CorpusReport()
    seen = seen if seen is not None else set()
    for where, rec, problem in _records(source):
        report.read += 1
        doc = None
        if problem is None:
            doc, problem = _check(rec, seen)
        if problem is not None:
            reason, detail = problem
            if on_error == "raise":
                raise InputError(f"{where}: {detail}; fix it, or skip such records with on_error='skip' (--skip-bad)")
            report.skipped[reason] += 1
            report.examples.setdefault(reason, where)
            continue
        assert doc is not None
        seen.add(doc.id)
        report.kept += 1
        yield doc


def _records(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
) -> Iterator[tuple[str, Any, tuple[str, str] | None]]:
    if isinstance(source, (str, os.PathLike)):
        path = corpus_file(source)
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield where, None, ("not UTF-8", f"line is not valid UTF-8 (byte {err.start}); re-save as UTF-8")
                    continue
                if not line.strip():
                    continue
                try:
                    yield where, json.loads(line), None
                except json.JSONDecodeError as err:
                    yield where, None, ("invalid JSON", f"line is not valid JSON ({err.msg} at column {err.colno})")
        return
    if isinstance(source, Mapping):
        raise InputError("pass an iterable of records (dicts with 'id' and 'text'), not one dict")
    for i, rec in enumerate(source):
        yield f"record {i}", rec, None


def _check(rec: Any, seen: set[str]) -> tuple[Doc | None, tuple[str, str] | None]:
    if isinstance(rec, Doc):
        doc = rec
    else:
        if not isinstance(rec, Mapping):
            return None, ("not an object", f"a record must be an object (got {type(rec).__name__})")
        raw_id = rec.get("_id", rec.get("id"))
        if raw_id is None or isinstance(raw_id, (dict, list, bool)) or str(raw_id).strip() == "":
            return None, ("missing id", f"record has no '_id' or 'id' (keys: {sorted(rec)})")
        text = rec.get("text")
        if not isinstance(text, str):
            why = "no 'text' field" if text is None else f"'text' is a {type(text).__name__}, not a string"
            return None, ("missing text", f"record {raw_id!r} has {why}")
        title = rec.get("title") or ""
        if not isinstance(title, str):
            return None, ("bad title", f"record {raw_id!r} has a 'title' that is a {type(title).__name__}")
        meta = dict(rec.get("metadata") or {}) if isinstance(rec.get("metadata"), Mapping) else {}
        meta.update({k: v for k, v in rec.items() if k not in _CORE})
        doc = Doc(str(raw_id), title, text, meta)
    if not doc.content.strip():
        return None, ("empty document", f"record {doc.id!r} has an empty title and text")
    if doc.id in seen:
        return None, ("duplicate id", f"id {doc.id!r} appears twice (ids must be unique)")
    return doc, None
