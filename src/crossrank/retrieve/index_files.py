"""The index folder's files: reading ``CURRENT`` and a manifest, and checking that files agree with it.

Every problem found in a file raises :class:`IndexDamagedError`: one line naming the file,
relative to the index folder, and what is wrong with it. The checks here are the cheap ones an
open runs (sizes, lengths, counts, names); :func:`deep_check_segment` and :func:`duplicate_ids`
read everything and are what ``crossrank index verify`` adds.

Readers never lock. A write builds a new generation, checks it, points ``CURRENT`` at it and only
then removes the old one, so a reader that read ``CURRENT`` just before a write may find its
generation gone while it opens it. :func:`open_current` tells that apart from damage: a failure
is only damage when ``CURRENT`` still names the same generation afterwards (writes never remove
the current generation); otherwise the open starts again on the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from crossrank.errors import IndexStateError

__all__ = [
    "FORMAT",
    "IndexDamagedError",
    "IndexError_",
    "check_live",
    "open_current",
    "peek_current",
    "read_current",
    "read_manifest",
]

T = TypeVar("T")

FORMAT = 1
RETRIEVERS = ("bm25", "dense", "hybrid")
GEN_NAME = re.compile(r"gen-\d{6,}")
SEG_NAME = re.compile(r"seg-\d{6,}")
#: opens of an index that a write replaces each time before giving up (a write takes far longer than an open)
OPEN_ATTEMPTS = 20
_REMEDY = "rebuild it (crossrank index build --overwrite) or restore it from a backup"
# what reading or parsing a damaged file raises, from numpy, json, sqlite3, bm25s and usearch
_READ_ERRORS = (
    OSError, ValueError, KeyError, TypeError, IndexError, EOFError, MemoryError, RuntimeError, sqlite3.Error,
)  # fmt: skip


#: the former name of :class:`~crossrank.errors.IndexStateError`, kept so existing imports work
IndexError_ = IndexStateError


class IndexDamagedError(IndexStateError):
    """A file of the index is missing, unreadable, or disagrees with the manifest.

    The message is one line: ``index DIR is damaged: FILE PROBLEM; rebuild it ... or restore it
    from a backup``.

    Attributes:
        folder: the index folder.
        file: the damaged file, relative to ``folder`` (e.g. ``gen-000003/live.npy``).
        problem: what is wrong with it.
    """

    def __init__(self, folder: Path, file: str, problem: str) -> None:
        self.folder = folder
        self.file = file
        self.problem = problem
        super().__init__(f"index {folder} is damaged: {file} {problem}; {_REMEDY}")

    @property
    def detail(self) -> str:
        """Return the file and its problem, without the folder and the remedy."""
        return f"{self.file} {self.problem}"


@contextlib.contextmanager
def reading(folder: Path, file: str) -> Iterator[None]:
    """Turn any failure to read or parse ``file`` (relative to ``folder``) into :class:`IndexDamagedError`."""
    try:
        yield
    except IndexStateError:
        raise
    except FileNotFoundError as err:
        raise IndexDamagedError(folder, file, "is missing") from err
    except _READ_ERRORS as err:
        raise IndexDamagedError(folder, file, f"cannot be read ({_describe(err)})") from err


def _describe(err: BaseException) -> str:
    text = str(err.args[-1] if isinstance(err, OSError) and err.args else err)  # OSError: no path, just why
    text = " ".join(text.split())
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def read_current(folder: Path) -> str:
    """Return the name of the current generation, from ``folder/CURRENT``.

    Raises:
        IndexStateError: no index in ``folder``, or an interrupted first build.
        IndexDamagedError: ``CURRENT`` is unreadable or names no generation.
    """
    current = folder / "CURRENT"
    if not folder.is_dir():
        raise IndexStateError(
            f"no index at {folder}: the folder does not exist; build one with `crossrank index build`"
        )
    try:
        raw = current.read_bytes()
    except FileNotFoundError:
        if any(p.name.startswith((".tmp-", "gen-", "segments")) for p in folder.iterdir()):
            raise IndexStateError(
                f"{folder} holds no complete index: a build was interrupted before it finished. Build it again "
                "(crossrank index build ... --overwrite)"
            ) from None
        raise IndexStateError(
            f"{folder} is not a crossrank index (no CURRENT file); build one with `crossrank index build`"
        ) from None
    except OSError as err:
        raise IndexDamagedError(folder, "CURRENT", f"cannot be read ({_describe(err)})") from err
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise IndexDamagedError(folder, "CURRENT", f"is not UTF-8 text (byte {err.start})") from err
    if not GEN_NAME.fullmatch(name):
        raise IndexDamagedError(folder, "CURRENT", f"names no generation (holds {name[:40]!r}; expected gen-NNNNNN)")
    return name


def peek_current(folder: Path) -> str | None:
    """Return the name ``CURRENT`` holds now, or ``None`` when it cannot be read."""
    try:
        return read_current(folder)
    except IndexStateError:
        return None


def open_current(folder: Path, load: Callable[[str], T]) -> T:
    """Return ``load(generation)`` for the current generation; start again when a write replaced it meanwhile.

    ``load`` raises :class:`IndexDamagedError` for a missing or bad file. That is only damage when
    ``CURRENT`` still names the same generation afterwards; otherwise a write made a new generation
    and removed the old one while it was being opened, and the open starts again on the new one.

    Raises:
        IndexDamagedError: the current generation is damaged.
        IndexStateError: no index, or ``CURRENT`` changed on each of 20 attempts.
    """
    for _ in range(OPEN_ATTEMPTS):
        name = read_current(folder)
        try:
            return load(name)
        except IndexDamagedError:
            if peek_current(folder) == name:
                raise
    raise IndexStateError(
        f"index {folder} was replaced by a write {OPEN_ATTEMPTS} times while it was being opened; open it again"
    )


def read_manifest(folder: Path, generation: str) -> dict[str, Any]:
    """Return the manifest of ``generation``, checked for every field an open needs.

    Raises:
        IndexDamagedError: the manifest is missing, not UTF-8 JSON, or lacks or mistypes a field.
        IndexStateError: the index has another format version.
    """
    file = f"{generation}/manifest.json"
    with reading(folder, file):
        raw = (folder / generation / "manifest.json").read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise IndexDamagedError(folder, file, f"is not UTF-8 text (byte {err.start})") from err
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise IndexDamagedError(folder, file, f"is not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(manifest, dict):
        raise IndexDamagedError(folder, file, f"holds a JSON {_json_type(manifest)}, not an object")
    fmt = manifest.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt != FORMAT:
        raise IndexStateError(f"index {folder} has format {fmt}; this crossrank reads format {FORMAT}; rebuild it")
    try:
        _check_manifest(manifest, generation)
    except _Bad as err:
        raise IndexDamagedError(folder, file, str(err)) from None
    return manifest


class _Bad(Exception):
    """A field of the manifest is missing or wrong (internal: becomes an IndexDamagedError)."""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "list", str: "string", int: "number", float: "number"}.get(type(value), "value")


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    """Return ``obj[key]``, which must be of ``kind`` (a bool is never a number)."""
    name = f"{where}{key}"
    if key not in obj:
        raise _Bad(f"lacks {name!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = any(k in (int, float) for k in kinds)
    if not isinstance(value, kinds) or (numeric and isinstance(value, bool)):
        allowed = " or ".join("null" if k is type(None) else _json_type(k()) for k in kinds)
        raise _Bad(f"has {name!r} = {json.dumps(value)[:40]}, not a {allowed}")
    return value


def _check_manifest(m: dict[str, Any], generation: str) -> None:
    if _get(m, "format", int) != FORMAT:
        raise _Bad(f"has 'format' = {m['format']}, not {FORMAT}")
    if _get(m, "generation", str) != generation:
        raise _Bad(f"names generation {m['generation'][:40]!r}, but CURRENT names {generation!r}")
    retriever = _get(m, "retriever", str)
    if retriever not in RETRIEVERS:
        raise _Bad(f"has 'retriever' = {retriever[:40]!r}, not one of {', '.join(RETRIEVERS)}")
    bm25 = _get(m, "bm25", (dict, type(None)))
    dense = _get(m, "dense", (dict, type(None)))
    for kind, settings, needed in (("BM25", bm25, ("bm25", "hybrid")), ("dense", dense, ("dense", "hybrid"))):
        if settings is None and retriever in needed:
            raise _Bad(f"has retriever {retriever!r} but no {kind} settings")
        if settings is not None and retriever not in needed:
            raise _Bad(f"has {kind} settings, but retriever {retriever!r}")
    if dense is not None:
        fingerprint = _get(dense, "fingerprint", dict, "dense.")
        if _get(fingerprint, "dim", int, "dense.fingerprint.") < 1:
            raise _Bad(f"has 'dense.fingerprint.dim' = {fingerprint['dim']}, not a size >= 1")
        if _get(dense, "dtype", str, "dense.") not in ("float32", "int8"):
            raise _Bad(f"has 'dense.dtype' = {dense['dtype'][:40]!r}, not float32 or int8")
        _get(dense, "source", str, "dense.")
        _get(dense, "backend", str, "dense.")
        _get(dense, "ann", str, "dense.")
        _get(_get(dense, "hnsw", dict, "dense."), "expansion_search", int, "dense.hnsw.")
    fusion = _get(m, "fusion", dict)
    if _get(fusion, "method", str, "fusion.") not in ("rrf", "interpolate"):
        raise _Bad(f"has 'fusion.method' = {fusion['method'][:40]!r}, not rrf or interpolate")
    _get(fusion, "rrf_k", int, "fusion.")
    _get(fusion, "dense_weight", (int, float), "fusion.")
    segments = _get(m, "segments", list)
    if not segments:
        raise _Bad("lists no segments")
    start, names = 0, set()
    for i, seg in enumerate(segments):
        where = f"segments[{i}]."
        if not isinstance(seg, dict):
            raise _Bad(f"has 'segments[{i}]' = {json.dumps(seg)[:40]}, not an object")
        name = _get(seg, "name", str, where)
        if not SEG_NAME.fullmatch(name) or name in names:
            raise _Bad(f"has {where + 'name'!r} = {name[:40]!r}, not a new segment name (seg-NNNNNN)")
        names.add(name)
        if _get(seg, "start", int, where) != start:
            raise _Bad(f"has {where + 'start'!r} = {seg['start']}, but the segments before it end at {start}")
        count = _get(seg, "count", int, where)
        if count < 1:
            raise _Bad(f"has {where + 'count'!r} = {count}, not a count >= 1")
        _get(seg, "hnsw", bool, where)
        start += count
    counts = _get(m, "counts", dict)
    slots, documents = _get(counts, "slots", int, "counts."), _get(counts, "documents", int, "counts.")
    if slots != start:
        raise _Bad(f"has 'counts.slots' = {slots}, but its segments hold {start} rows")
    if not 1 <= documents <= slots:
        raise _Bad(f"has 'counts.documents' = {documents}, not within [1, {slots}]")
    if bm25 is not None and _get(counts, "bm25_terms", int, "counts.") < 0:
        raise _Bad(f"has 'counts.bm25_terms' = {counts['bm25_terms']}, not a count")


# ---------------------------------------------------------------------- the files of a generation


def check_live(
    folder: Path, file: str, live: npt.NDArray[Any], slots: int, documents: int | None = None
) -> npt.NDArray[np.bool_]:
    """Return ``live`` once checked: one bool per slot of the segments, ``documents`` of them true."""
    if not isinstance(live, np.ndarray) or live.dtype != np.bool_ or live.ndim != 1:
        shape = f"{live.dtype} array of shape {live.shape}" if isinstance(live, np.ndarray) else type(live).__name__
        raise IndexDamagedError(folder, file, f"holds a {shape}, not one bool per document slot")
    if live.size != slots:
        raise IndexDamagedError(folder, file, f"has {live.size} slots, but the manifest's segments hold {slots} rows")
    n_live = int(live.sum())
    if documents is not None and n_live != documents:
        raise IndexDamagedError(folder, file, f"marks {n_live} documents live, but the manifest counts {documents}")
    if n_live == 0:
        raise IndexDamagedError(folder, file, "marks no document live")
    return live


def load_live(folder: Path, generation: str, slots: int, documents: int) -> npt.NDArray[np.bool_]:
    """Return the generation's ``live.npy``, checked against the manifest's counts."""
    file = f"{generation}/live.npy"
    with reading(folder, file):
        live = np.load(folder / file, allow_pickle=False)
    return check_live(folder, file, live, slots, documents)


def load_bm25_rows(folder: Path, generation: str, live: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Return ``bm25_rows.npy``: the live slots, ascending, one per row of the BM25 matrix."""
    file = f"{generation}/bm25_rows.npy"
    with reading(folder, file):
        rows = np.load(folder / file, allow_pickle=False)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.int64 or rows.ndim != 1:
        raise IndexDamagedError(folder, file, "is not a list of slots (int64)")
    if not np.array_equal(rows, np.flatnonzero(live)):
        raise IndexDamagedError(folder, file, f"lists {rows.size} slots that are not the live slots of live.npy")
    return rows


def check_bm25_matrix(folder: Path, generation: str, scores: dict[str, Any], documents: int, terms: int) -> None:
    """Check the loaded BM25 matrix: a row per live document and a column per term."""
    file = f"{generation}/bm25"
    with reading(folder, file):
        num_docs = int(scores["num_docs"])
        indptr, data, indices = scores["indptr"], scores["data"], scores["indices"]
        if num_docs != documents:
            raise IndexDamagedError(folder, file, f"scores {num_docs} documents; the manifest counts {documents}")
        if indptr.ndim != 1 or indptr.size != max(terms, 1) + 1:
            raise IndexDamagedError(folder, file, f"has {indptr.size - 1} term columns; the vocabulary has {terms}")
        nnz = int(indptr[-1])
        if data.shape != (nnz,) or indices.shape != (nnz,):
            raise IndexDamagedError(
                folder, file, f"holds {data.size} scores and {indices.size} rows where its columns need {nnz}"
            )


def check_segment_files(folder: Path, seg: Any, manifest: dict[str, Any]) -> None:
    """Check that a segment's files exist and have the sizes its row count implies.

    ``seg`` has ``name``, ``count`` and ``hnsw``.
    """
    root = f"segments/{seg.name}"
    base = folder / "segments" / seg.name
    if not (base / "docs.sqlite").is_file():
        raise IndexDamagedError(folder, f"{root}/docs.sqlite", "is missing")
    if manifest["bm25"] is not None:
        _sized(folder, f"{root}/lengths.bin", 4 * seg.count)
        with reading(folder, f"{root}/lengths.bin"):
            counts = np.fromfile(base / "lengths.bin", dtype=np.int32)
        if counts.size and int(counts.min()) < 0:
            raise IndexDamagedError(folder, f"{root}/lengths.bin", "holds a negative length")
        _sized(folder, f"{root}/tokens.bin", 4 * int(counts.sum(dtype=np.int64)))
    dense = manifest["dense"]
    if dense is not None:
        dim = int(dense["fingerprint"]["dim"])
        width = 1 if dense["dtype"] == "int8" else 4
        _sized(folder, f"{root}/vectors.bin", width * dim * seg.count)
        if dense["dtype"] == "int8":
            _sized(folder, f"{root}/scales.bin", 4 * seg.count)
        if seg.hnsw and not (base / "hnsw.usearch").is_file():
            raise IndexDamagedError(folder, f"{root}/hnsw.usearch", "is missing")


def _sized(folder: Path, file: str, size: int) -> None:
    with reading(folder, file):
        got = (folder / file).stat().st_size
    if got != size:
        raise IndexDamagedError(folder, file, f"has {got:,} bytes where the segment's rows need {size:,}")


def readonly_uri(db_file: Path) -> str:
    """Return a SQLite URI that opens ``db_file`` read-only, whatever its path holds (``#``, ``?``, ``%``)."""
    return f"file:{urllib.parse.quote(str(db_file.absolute()))}?mode=ro&immutable=1"


def open_docs_store(folder: Path, seg: Any) -> sqlite3.Connection:
    """Open a segment's ``docs.sqlite`` read-only and check that its rows are ``0 .. count - 1``."""
    file = f"segments/{seg.name}/docs.sqlite"
    with reading(folder, file):
        db = sqlite3.connect(readonly_uri(folder / file), uri=True, check_same_thread=False)
    try:
        with reading(folder, file):
            low, high = db.execute("SELECT min(row), max(row) FROM docs").fetchone()
        if (low, high) != (0, seg.count - 1):
            raise IndexDamagedError(
                folder, file, f"holds rows {low}..{high}, but the manifest gives the segment {seg.count} rows"
            )
    except BaseException:
        db.close()
        raise
    return db


# ---------------------------------------------------------------------- verify: read everything


def deep_check_segment(
    folder: Path, seg: Any, manifest: dict[str, Any], vocab_size: int | None, rows_per_step: int = 65536
) -> list[IndexDamagedError]:
    """Return the problems found by reading all of a segment: SQLite's integrity check, term ids, vectors."""
    problems: list[IndexDamagedError] = []
    base = folder / "segments" / seg.name
    root = f"segments/{seg.name}"

    def check(fn: Callable[[], None]) -> None:
        try:
            fn()
        except IndexDamagedError as err:
            problems.append(err)

    def docs() -> None:
        file = f"{root}/docs.sqlite"
        with reading(folder, file):
            db = sqlite3.connect(readonly_uri(base / "docs.sqlite"), uri=True)
        try:
            try:
                result = [str(r[0]) for r in db.execute("PRAGMA integrity_check(5)")]
            except sqlite3.DatabaseError as err:  # a page so damaged the check itself stops
                result = [str(err)]
            if result != ["ok"]:
                raise IndexDamagedError(folder, file, f"fails SQLite's integrity check ({'; '.join(result)[:200]})")
            with reading(folder, file):
                count = db.execute("SELECT count(*) FROM docs").fetchone()[0]
                bad_meta = db.execute(
                    "SELECT count(*) FROM docs WHERE metadata IS NOT NULL AND NOT json_valid(metadata)"
                ).fetchone()[0]
        finally:
            db.close()
        if count != seg.count:
            raise IndexDamagedError(folder, file, f"holds {count} rows, but the manifest gives the segment {seg.count}")
        if bad_meta:
            raise IndexDamagedError(folder, file, f"holds {bad_meta} records whose metadata is not JSON")

    def tokens() -> None:
        if manifest["bm25"] is None or vocab_size is None:
            return
        file = f"{root}/tokens.bin"
        with reading(folder, file):
            if not (folder / file).stat().st_size:
                return
            ids = np.memmap(folder / file, dtype=np.int32, mode="r")
            for a in range(0, ids.size, rows_per_step * 64):
                part = np.asarray(ids[a : a + rows_per_step * 64])
                if int(part.min()) < 0 or int(part.max()) >= vocab_size:
                    raise IndexDamagedError(folder, file, f"holds term ids outside the vocabulary of {vocab_size}")

    def vectors() -> None:
        dense = manifest["dense"]
        if dense is None:
            return
        file = f"{root}/vectors.bin"
        dim = int(dense["fingerprint"]["dim"])
        dtype = np.int8 if dense["dtype"] == "int8" else np.float32
        with reading(folder, file):
            vecs = np.memmap(base / "vectors.bin", dtype=dtype, mode="r", shape=(seg.count, dim))
            for a in range(0, seg.count, rows_per_step):
                if dtype == np.float32 and not np.isfinite(vecs[a : a + rows_per_step]).all():
                    raise IndexDamagedError(folder, file, "holds values that are not finite numbers")
        if dense["dtype"] == "int8":
            file = f"{root}/scales.bin"
            with reading(folder, file):
                scales = np.fromfile(base / "scales.bin", dtype=np.float32)
            if not (np.isfinite(scales).all() and (scales > 0).all()):
                raise IndexDamagedError(folder, file, "holds scales that are not positive finite numbers")

    check(docs)
    check(tokens)
    check(vectors)
    return problems


def duplicate_ids(folder: Path, segments: Sequence[Any], live: npt.NDArray[np.bool_]) -> IndexDamagedError | None:
    """Return a problem when a document id is live in more than one slot (ids must be unique).

    Ids are compared by an 8-byte hash (memory: 8 bytes a document); a shared hash is confirmed
    against the ids themselves.
    """

    def live_ids(seg: Any) -> Iterator[tuple[str, str]]:
        file = f"segments/{seg.name}/docs.sqlite"
        seg_live = live[seg.start : seg.start + seg.count]
        with reading(folder, file):
            db = sqlite3.connect(readonly_uri(folder / file), uri=True)
            try:
                for row, doc_id in db.execute("SELECT row, id FROM docs"):
                    if 0 <= row < seg.count and seg_live[row]:
                        yield file, str(doc_id)
            finally:
                db.close()

    parts = [np.fromiter((_hash(i) for _, i in live_ids(seg)), dtype=np.uint64) for seg in segments]
    hashes = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
    suspects = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if not suspects:
        return None
    seen: dict[str, str] = {}  # a collision of 8-byte hashes is possible, if unlikely: compare the ids
    for seg in segments:
        for file, doc_id in live_ids(seg):
            if _hash(doc_id) in suspects:
                if doc_id in seen:
                    problem = f"holds a live document {doc_id!r} that {seen[doc_id]} holds too"
                    return IndexDamagedError(folder, file, problem)
                seen[doc_id] = file
    return None


def _hash(doc_id: object) -> int:
    return int.from_bytes(hashlib.blake2b(str(doc_id).encode("utf-8"), digest_size=8).digest(), "little")
