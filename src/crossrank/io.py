"""Reading and writing the field's file formats: JSONL, BEIR corpus/queries/qrels, TREC runs."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from crossrank._text import plural
from crossrank.documents import record_text
from crossrank.errors import InputError
from crossrank.ranking import RankedList

__all__ = [
    "RunCandidates",
    "beir_qrels_path",
    "iter_trec_run",
    "read_beir_corpus",
    "read_beir_queries",
    "read_documents_jsonl",
    "read_jsonl",
    "read_qrels",
    "read_run_candidates",
    "read_trec_run",
    "run_top_ids",
    "write_trec_run",
]


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield each line of a JSONL file as a dict; blank lines are skipped.

    Raises:
        InputError: the file is missing, a line is not valid UTF-8, not valid JSON, or not an object;
            the message names the file and line.
    """
    p = Path(path)
    for lineno, obj in _jsonl_values(p):
        if not isinstance(obj, dict):
            raise InputError(f"{p}:{lineno} must be a JSON object (got {type(obj).__name__})")
        yield obj


def read_documents_jsonl(path: str | Path) -> Iterator[str | dict[str, Any]]:
    """Yield the documents of a JSONL file, one per line: a string, or a dict with a ``text`` string.

    A line is either a JSON string (``"a cat is a small feline"``) or an object with ``text`` and
    optionally ``id`` (or BEIR's ``_id``, copied to ``id``) and ``title``. Blank lines are skipped.

    Raises:
        InputError: the file is missing, or a line is not valid UTF-8 or JSON, is another JSON
            type, or is an object without a ``text`` string; the message names the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
        >>> _ = f.write_text('"a cat"\\n{"_id": "d2", "text": "a dog"}\\n', encoding="utf-8")
        >>> list(read_documents_jsonl(f))
        ['a cat', {'_id': 'd2', 'text': 'a dog', 'id': 'd2'}]
    """
    p = Path(path)
    for lineno, value in _jsonl_values(p):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            if not isinstance(value.get("text"), str):
                got = f"keys {sorted(value)}" if "text" not in value else f"text of type {type(value['text']).__name__}"
                raise InputError(
                    f"{p}:{lineno} needs a 'text' string (got {got}); "
                    'write {"id": ..., "text": "..."} or a JSON string per line'
                )
            if "_id" in value and "id" not in value:
                value = {**value, "id": value["_id"]}
            yield value
        else:
            raise InputError(
                f"{p}:{lineno} must be a JSON string or an object with 'text' (got {type(value).__name__} "
                f'{json.dumps(value)[:60]}); quote the document text or wrap it as {{"text": ...}}'
            )


def _jsonl_values(p: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed JSON value)`` for each non-blank line of a JSONL file."""
    try:
        fh = p.open("rb")
    except OSError as err:
        raise InputError(f"cannot open {p} ({err.strerror}); check the path") from err
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{p}:{lineno} is not valid UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r}); "
                    "re-save the file as UTF-8"
                ) from err
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(
                    f"{p}:{lineno} is not valid JSON ({err.msg} at column {err.colno}); fix that line"
                ) from err


def read_toml(path: str | Path, *, what: str, allowed: Iterable[str]) -> dict[str, Any]:
    """Return a TOML file's top-level table, checked against the ``allowed`` keys.

    Raises:
        InputError: the file is unreadable, not TOML, or has keys outside ``allowed``
            (``what`` names the file's role in the message, e.g. "recipe").
    """
    import tomllib

    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read {what} {p} ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{p} is not valid TOML ({err})") from err
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise InputError(f"{p}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return raw


def read_beir_corpus(path: str | Path) -> dict[str, dict[str, Any]]:
    """Return a BEIR corpus (``_id``, ``title``, ``text``) as ``{doc_id: record}``.

    Raises:
        InputError: a line lacks ``_id`` or ``text``, or repeats an id.
    """
    corpus: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(read_jsonl(path), start=1):
        doc_id = rec.get("_id", rec.get("id"))
        if doc_id is None or not isinstance(rec.get("text"), str):
            raise InputError(f"{path}: record {i} needs '_id' and a 'text' string (got keys {sorted(rec)})")
        doc_id = str(doc_id)
        if doc_id in corpus:
            raise InputError(f"{path}: record {i} repeats document id {doc_id!r}; ids must be unique")
        corpus[doc_id] = {"id": doc_id, "title": rec.get("title") or "", "text": rec["text"]}
    return corpus


def read_beir_queries(path: str | Path) -> dict[str, str]:
    """Return BEIR queries (``_id``, ``text``) as ``{query_id: text}``.

    Raises:
        InputError: a line lacks ``_id`` or ``text``.
    """
    queries: dict[str, str] = {}
    for i, rec in enumerate(read_jsonl(path), start=1):
        qid = rec.get("_id", rec.get("id"))
        if qid is None or not isinstance(rec.get("text"), str):
            raise InputError(f"{path}: record {i} needs '_id' and a 'text' string (got keys {sorted(rec)})")
        queries[str(qid)] = rec["text"]
    return queries


def read_trec_run(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """Return a TREC run as ``{query_id: [(doc_id, score), ...]}``, each list best first.

    Lines are ``qid Q0 docid rank score tag``; lists are ordered by score (then rank), as trec_eval does.

    Raises:
        InputError: a line has the wrong number of fields or a non-numeric rank or score.
    """
    rows: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for _, qid, doc, rank, score in iter_trec_run(path):
        rows[qid].append((score, rank, doc))
    return {qid: [(d, s) for s, _, d in sorted(r, key=lambda t: (-t[0], t[1]))] for qid, r in rows.items()}


def run_top_ids(
    run: str | Path | Mapping[str, Sequence[tuple[str, float]]],
    depth: int,
    *,
    queries: Iterable[str] | None = None,
    corpus: Container[str] | None = None,
) -> dict[str, list[str]]:
    """Return each query's top ``depth`` doc ids in a run (a file or :func:`read_trec_run`'s value), best first.

    The one rule for a run's candidates, used by reranking, training and distillation alike: cut
    each list at ``depth`` first, then drop the ids ``corpus`` lacks (when given), so a missing
    document never lets a deeper one in. With ``queries``, exactly those queries, in that order
    (an empty list for a query the run lacks).
    """
    ranked = read_trec_run(run) if isinstance(run, (str, Path)) else run
    keys = list(ranked) if queries is None else list(queries)
    return {q: [d for d, _ in ranked.get(q, ())[:depth] if corpus is None or d in corpus] for q in keys}


def check_run_ids(
    run: dict[str, list[tuple[str, float]]],
    queries: Mapping[str, Any],
    corpus: Mapping[str, Any],
    *,
    depth: int,
    skip_missing: bool,
    where: tuple[object, object, object],
) -> tuple[list[str], list[str]]:
    """Return the query ids and (top-``depth``) doc ids a run names that ``queries`` and ``corpus`` lack.

    Args:
        where: the run, queries and corpus paths, for the message.

    Raises:
        InputError: some are missing and ``skip_missing`` is off.
    """
    run_path, queries_path, corpus_path = where
    missing_q = [q for q in run if q not in queries]
    missing_d = sorted({d for q in run for d, _ in run[q][:depth] if d not in corpus})
    if (missing_q or missing_d) and not skip_missing:
        what = []
        if missing_q:
            what.append(f"{plural(len(missing_q), 'query id')} not in {queries_path} (first: {missing_q[0]!r})")
        if missing_d:
            what.append(f"{plural(len(missing_d), 'doc id')} not in {corpus_path} (first: {missing_d[0]!r})")
        raise InputError(f"{run_path} names {' and '.join(what)}; fix the files or pass --skip-missing")
    return missing_q, missing_d


@dataclass(frozen=True, slots=True)
class RunCandidates:
    """A first-stage run's top candidates, with the texts reranking reads.

    Attributes:
        query_ids: the run's queries that have a text and at least one candidate with text, in run order.
        queries: their texts.
        documents: per query, its candidates' records (``{"id", "title", "text", ...}``), in run order.
        missing_queries: run query ids with no text in the queries file (kept only with ``skip_missing``).
        missing_docs: top-``depth`` doc ids with no record in the corpus (likewise).
        ranked: every run query's top-``depth`` doc ids as the run lists them, missing ones included.
    """

    query_ids: tuple[str, ...]
    queries: tuple[str, ...]
    documents: tuple[tuple[dict[str, Any], ...], ...]
    missing_queries: tuple[str, ...] = ()
    missing_docs: tuple[str, ...] = ()
    ranked: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        """Return the number of (query, candidate) pairs."""
        return sum(len(d) for d in self.documents)

    def pairs(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """Return the pairs flat, in run order: query ids, query texts, doc ids and document texts."""
        qids: list[str] = []
        texts: list[str] = []
        dids: list[str] = []
        docs: list[str] = []
        for qid, query, records in zip(self.query_ids, self.queries, self.documents, strict=True):
            qids.extend([qid] * len(records))
            texts.extend([query] * len(records))
            dids.extend(r["id"] for r in records)
            docs.extend(record_text(r) for r in records)
        return qids, texts, dids, docs


def read_run_candidates(
    run: str | Path, queries: str | Path, corpus: str | Path, *, depth: int, skip_missing: bool = False
) -> RunCandidates:
    """Return the top ``depth`` candidates of each query of a TREC run, with their texts.

    This is the one loader of "a run over a BEIR corpus and queries": reranking a run, batch
    reranking on Ray and the checks of an exported model all read candidates through it.

    Raises:
        InputError: a file cannot be read, ``depth`` < 1, or the run names query or doc ids the
            files lack (unless ``skip_missing``, which drops them and reports them).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f"depth must be an int >= 1 (got {depth!r})")
    docs = read_beir_corpus(corpus)
    texts = read_beir_queries(queries)
    ranked = read_trec_run(run)
    missing_q, missing_d = check_run_ids(
        ranked, texts, docs, depth=depth, skip_missing=skip_missing, where=(run, queries, corpus)
    )
    qids, qtexts, records = [], [], []
    for qid, ids in run_top_ids(ranked, depth, corpus=docs).items():
        if qid not in texts:
            continue
        found = tuple(docs[d] for d in ids)
        if found:
            qids.append(qid)
            qtexts.append(texts[qid])
            records.append(found)
    top = {qid: tuple(ids) for qid, ids in run_top_ids(ranked, depth).items()}
    return RunCandidates(tuple(qids), tuple(qtexts), tuple(records), tuple(missing_q), tuple(missing_d), top)


def iter_trec_run(path: str | Path) -> Iterator[tuple[int, str, str, int, float]]:
    """Yield ``(line number, query id, doc id, rank, score)`` for each line of a TREC run, in file order.

    Raises:
        InputError: the file cannot be read, or a line has the wrong number of fields or a
            non-numeric rank or score (named by file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot open run {p} ({err.strerror}); check the path") from err
    except UnicodeDecodeError as err:
        raise InputError(f"run {p} is not valid UTF-8; re-save the file as UTF-8") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InputError(f"{p}:{lineno} must have 6 fields 'qid Q0 docid rank score tag' (got {len(parts)})")
        try:
            rank, score = int(parts[3]), float(parts[4])
        except ValueError as err:
            raise InputError(f"{p}:{lineno} has a non-numeric rank or score ({parts[3]!r}, {parts[4]!r})") from err
        yield lineno, parts[0], parts[2], rank, score


def write_trec_run(rankings: Iterable[RankedList], out: TextIO, *, tag: str = "crossrank") -> int:
    """Write rankings as TREC run lines (``qid Q0 docid rank score tag``); return the lines written.

    ``rankings`` are :class:`~crossrank.ranking.Ranking` or :class:`~crossrank.pipeline.SearchResult`
    values (any :class:`~crossrank.ranking.RankedList`); ranks count from 1 in list order. Scores
    keep 9 significant digits, enough for a float32 to read back as itself, so a run read back
    ties no documents its scores told apart.

    Raises:
        InputError: a ranking has no query id.
    """
    n = 0
    for ranking in rankings:
        if ranking.query_id is None:
            raise InputError("every ranking needs a query_id to be written as a TREC run")
        for rank, hit in enumerate(ranking.hits, start=1):
            out.write(f"{ranking.query_id} Q0 {hit.doc_id} {rank} {hit.score:.9g} {tag}\n")
            n += 1
    return n


def beir_qrels_path(folder: str | Path, split: str = "test") -> Path:
    """Return the judgments file of a data folder: ``qrels/<split>.tsv`` (BEIR), else ``qrels.tsv``.

    The second layout is a single-split folder such as ``examples/dl19``. Every command that
    takes ``--data`` finds its judgments here, so they all accept the same folders.

    Raises:
        InputError: neither file exists; the message lists the splits the folder has.
    """
    root = Path(folder)
    for candidate in (root / "qrels" / f"{split}.tsv", root / "qrels.tsv"):
        if candidate.is_file():
            return candidate
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist; pass a BEIR folder with qrels/<split>.tsv or qrels.tsv")
    found = sorted(f.stem for f in (root / "qrels").glob("*.tsv"))
    there = f"; splits there: {', '.join(found)} (pass --split)" if found else ""
    raise InputError(f"no judgments in {root} for split {split!r}: expected qrels/{split}.tsv or qrels.tsv{there}")


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Return judgments as ``{query_id: {doc_id: grade}}``, from BEIR tsv (with header) or TREC qrels.

    Raises:
        InputError: a line is malformed.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"cannot open {p} ({err.strerror}); check the path") from err
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or (lineno == 1 and parts[0] in ("query-id", "query_id", "qid")):
            continue
        if len(parts) == 3:
            qid, did, grade = parts
        elif len(parts) == 4:
            qid, _, did, grade = parts
        else:
            raise InputError(f"{p}:{lineno} must be 'qid docid grade' (BEIR) or 'qid 0 docid grade' (TREC)")
        try:
            qrels[qid][did] = int(float(grade))
        except ValueError as err:
            raise InputError(f"{p}:{lineno} has a non-numeric grade {grade!r}") from err
    return dict(qrels)
