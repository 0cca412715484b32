"""A persistent, crash-safe retrieval index folder: BM25, dense vectors, or both.

Layout::

    DIR/CURRENT              name of the live generation, replaced atomically
    DIR/gen-000003/          one generation: manifest.json, live.npy, vocab.json, bm25/
    DIR/segments/seg-000002/ immutable documents: docs.sqlite, tokens, vectors, hnsw.usearch

Every write builds new files under a temporary name, fsyncs them, renames them into place, and
only then points ``CURRENT`` at the new generation (``os.replace``). A write killed at any point
leaves ``CURRENT`` on the previous complete generation; the debris is removed by the next write.
Segments are never modified after they are written: adding documents writes a new segment,
deleting flips bits in the generation's ``live.npy``, and BM25 is rebuilt over the live documents
(its statistics are global). :meth:`Index.compact` copies the live rows of all segments into one new
segment and drops the old ones.

Opening a generation checks that its files agree with its manifest (array lengths, file sizes,
segment rows, names); a damaged file raises :class:`IndexDamagedError`, one line naming it. A write
checks the generation it builds on and the one it made the same way, before ``CURRENT`` moves, so
the last good generation is never removed for a bad one. Readers take no lock: an open that loses
its generation to a write starts again on the new one (see :mod:`crossrank.retrieve.index_files`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError, InputError, ModelError
from crossrank.retrieve.bm25 import BM25Index, BM25Settings, BM25Tokenizer, build_bm25
from crossrank.retrieve.corpus import CorpusReport, Doc, OnError, corpus_file, read_corpus
from crossrank.retrieve.embed import BiEncoder
from crossrank.retrieve.fusion import Candidates, fuse_interpolate, fuse_rrf
from crossrank.retrieve.index_files import (
    FORMAT,
    IndexDamagedError,
    IndexError_,
    check_bm25_matrix,
    check_live,
    check_segment_files,
    deep_check_segment,
    duplicate_ids,
    load_bm25_rows,
    load_live,
    open_current,
    open_docs_store,
    read_current,
    read_manifest,
    reading,
    readonly_uri,
)
from crossrank.retrieve.vectors import VectorDtype, VectorReader, VectorWriter, build_hnsw

__all__ = ["Index", "IndexDamagedError", "IndexError_", "Retriever", "VerifyReport", "WriteReport"]

log = logging.getLogger(__name__)

Retriever = Literal["bm25", "dense", "hybrid"]
_RETRIEVERS = ("bm25", "dense", "hybrid")
#: with ``ann="auto"``, a segment gets an HNSW graph from this many vectors up
HNSW_FROM = 50_000
#: an ``add`` that would leave more segments than this merges them all in the same write
MAX_SEGMENTS = 32


@dataclass(slots=True)
class WriteReport:
    """What a build or update did.

    Attributes:
        added: documents added.
        replaced: documents that replaced an older version with the same id.
        deleted: documents deleted.
        purged: dead rows (deleted or replaced documents) dropped from disk by :meth:`Index.compact`, or
            by an ``add`` that merged the segments.
        corpus: the corpus reader's report (records read, kept, skipped and why).
        seconds: wall time.
    """

    added: int = 0
    replaced: int = 0
    deleted: int = 0
    purged: int = 0
    corpus: CorpusReport = field(default_factory=CorpusReport)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return {
            "added": self.added,
            "replaced": self.replaced,
            "deleted": self.deleted,
            "purged": self.purged,
            "corpus": self.corpus.to_dict(),
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class VerifyReport:
    """What :meth:`Index.verify` found.

    Attributes:
        folder: the index folder.
        generation: the current generation, when ``CURRENT`` could be read.
        documents: live documents, by the manifest.
        segments: segments, by the manifest.
        files: files read.
        problems: one line per damaged file (the file, relative to ``folder``, and what is wrong).
        leftovers: what killed writes and replaced generations left, which the next write removes
            (not damage).
    """

    folder: str
    generation: str | None = None
    documents: int = 0
    segments: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return {
            "folder": self.folder,
            "ok": self.ok,
            "generation": self.generation,
            "documents": self.documents,
            "segments": self.segments,
            "files": self.files,
            "problems": list(self.problems),
            "leftovers": list(self.leftovers),
        }


@dataclass(frozen=True, slots=True)
class _Segment:
    name: str
    start: int
    count: int
    hnsw: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "count": self.count, "hnsw": self.hnsw}


class Index:
    """A retrieval index in a folder. Use :meth:`build` to make one and :meth:`open` to reopen it.

    Example:
        >>> idx = Index.build("my-index", "corpus.jsonl", retriever="hybrid")  # doctest: +SKIP
        >>> idx = Index.open("my-index")  # doctest: +SKIP
        >>> idx.retrieve(["what is a cat"], k=100)  # doctest: +SKIP
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], encoder: BiEncoder | None, threads: int) -> None:
        """Open the generation ``manifest`` describes (as :func:`read_manifest` returns it), checking its files.

        Raises:
            IndexDamagedError: a file is missing, unreadable, or disagrees with the manifest.
        """
        self.folder = folder
        self.manifest = manifest
        self.generation = gen_name = str(manifest["generation"])
        counts = manifest["counts"]
        self.segments = [_Segment(**s) for s in manifest["segments"]]
        self.has_bm25 = bool(manifest["bm25"])
        self.has_dense = bool(manifest["dense"])
        self.threads = threads
        self.encoder = encoder
        self._bm25: BM25Index | None = None
        self._bm25_rows: npt.NDArray[np.int64] | None = None
        self._vectors: list[VectorReader] = []
        self._db: list[sqlite3.Connection] = []
        self._db_lock = threading.Lock()  # one SQLite connection per segment, shared by threads
        self.bm25_settings = _bm25_settings(folder, manifest)
        self.live: npt.NDArray[np.bool_] = load_live(folder, gen_name, counts["slots"], counts["documents"])
        try:
            for seg in self.segments:
                check_segment_files(folder, seg, manifest)
            if self.bm25_settings is not None:
                self._bm25, self._bm25_rows = _open_bm25(folder, manifest, self.bm25_settings, self.live, threads)
            if self.has_dense:
                dense = manifest["dense"]
                for seg in self.segments:
                    file = f"segments/{seg.name}/" + ("hnsw.usearch" if seg.hnsw else "vectors.bin")
                    with reading(folder, file):
                        reader = VectorReader(
                            folder / "segments" / seg.name,
                            seg.count,
                            int(dense["fingerprint"]["dim"]),
                            dense["dtype"],
                            hnsw=seg.hnsw,
                            expansion_search=int(dense["hnsw"]["expansion_search"]),
                        )
                    if reader.hnsw is not None and len(reader.hnsw) != seg.count:
                        raise IndexDamagedError(
                            folder, file, f"holds {len(reader.hnsw)} vectors; the segment has {seg.count}"
                        )
                    self._vectors.append(reader)
            for seg in self.segments:
                self._db.append(open_docs_store(folder, seg))
        except BaseException:
            self.close()
            raise
        self._starts = np.array([s.start for s in self.segments], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.manifest["counts"]["documents"])

    def __repr__(self) -> str:
        kinds = [k for k, v in (("bm25", self.has_bm25), ("dense", self.has_dense)) if v]
        return f"Index({str(self.folder)!r}, documents={len(self)}, retrievers={'+'.join(kinds)})"

    def close(self) -> None:
        """Close the document store."""
        for db in self._db:
            db.close()

    @property
    def retrievers(self) -> list[str]:
        """Return the first stages this index can run."""
        out = []
        if self.has_bm25:
            out.append("bm25")
        if self.has_dense:
            out.append("dense")
        if self.has_bm25 and self.has_dense:
            out.append("hybrid")
        return out

    @property
    def default_retriever(self) -> Retriever:
        """Return the first stage used when none is named: what the index was built for."""
        return str(self.manifest["retriever"])  # type: ignore[return-value]

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike[str],
        corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
        *,
        retriever: Retriever = "bm25",
        bm25: BM25Settings | None = None,
        dense_model: str | os.PathLike[str] | BiEncoder = "bge-small-en",
        dtype: VectorDtype = "float32",
        ann: Literal["auto", "exact", "hnsw"] = "auto",
        hnsw_connectivity: int = 16,
        hnsw_expansion_add: int = 128,
        hnsw_expansion_search: int = 128,
        fusion: Literal["rrf", "interpolate"] = "rrf",
        rrf_k: int = 60,
        dense_weight: float = 0.5,
        on_error: OnError = "raise",
        overwrite: bool = False,
        progress: bool = False,
        chunk_size: int = 2048,
        threads: int | None = None,
        report: WriteReport | None = None,
    ) -> Index:
        """Build an index of ``corpus`` in ``folder`` and return it opened.

        Args:
            folder: where the index lives; created if missing.
            corpus: a BEIR folder, a JSONL file, or an iterable of records ``{"id", "text", "title"?, ...}``.
            retriever: which first stages to build: ``"bm25"``, ``"dense"`` or ``"hybrid"`` (both).
            bm25: BM25 parameters and analysis; the defaults reproduce Anserini's BM25.
            dense_model: the bi-encoder (name, folder, hub id, or a loaded :class:`BiEncoder`).
            dtype: how vectors are stored: ``"float32"`` or ``"int8"`` (4x smaller).
            ann: ``"exact"`` search, ``"hnsw"`` graphs, or ``"auto"`` (HNSW from 50,000 vectors a segment).
            hnsw_connectivity, hnsw_expansion_add, hnsw_expansion_search: HNSW graph parameters.
            fusion: how ``"hybrid"`` merges the two lists: reciprocal rank fusion or score interpolation.
            rrf_k: the constant of reciprocal rank fusion.
            dense_weight: the dense share of interpolated scores (BM25 gets ``1 - dense_weight``).
            on_error: ``"raise"`` on a bad record, or ``"skip"`` it and count it in the report.
            overwrite: replace an index already in ``folder`` (atomically: the old one stays
                readable until the new one is complete).
            progress: show a progress bar with documents per second.
            chunk_size: documents read, stored and encoded at a time (bounds memory).
            threads: threads for encoding and search; defaults to the cores this process may use.
            report: filled in with what the build did.

        Raises:
            IndexError_: ``folder`` holds an index and ``overwrite`` is false, or another process writes it.
            InputError: a bad record (with ``on_error="raise"``), or an empty corpus.
            ConfigError: bad settings.
        """
        if retriever not in _RETRIEVERS:
            raise ConfigError(f"retriever must be one of {', '.join(_RETRIEVERS)} (got {retriever!r})")
        if dtype not in ("float32", "int8"):
            raise ConfigError(f"dtype must be 'float32' or 'int8' (got {dtype!r})")
        if ann not in ("auto", "exact", "hnsw"):
            raise ConfigError(f"ann must be 'auto', 'exact' or 'hnsw' (got {ann!r})")
        if fusion not in ("rrf", "interpolate"):
            raise ConfigError(f"fusion must be 'rrf' or 'interpolate' (got {fusion!r})")
        if not 0.0 <= dense_weight <= 1.0:
            raise ConfigError(f"dense_weight must be within [0, 1] (got {dense_weight})")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        if (path / "CURRENT").exists() and not overwrite:
            raise IndexError_(f"{path} already holds an index; pass overwrite=True (--overwrite) or use add/delete")
        threads = threads or _cores()
        with _WriteLock(path):
            started = time.perf_counter()
            report = report if report is not None else WriteReport()
            use_bm25 = retriever in ("bm25", "hybrid")
            use_dense = retriever in ("dense", "hybrid")
            settings = bm25 or BM25Settings()
            encoder = _encoder(dense_model, threads) if use_dense else None
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "retriever": retriever,
                "bm25": settings.to_dict() if use_bm25 else None,
                "dense": None,
                "fusion": {"method": fusion, "rrf_k": rrf_k, "dense_weight": dense_weight},
                "segments": [],
                "created": _now(),
            }
            if encoder is not None:
                manifest["dense"] = {
                    "fingerprint": encoder.fingerprint(),
                    "source": _model_source(encoder),
                    "backend": encoder.backend_name,
                    "dtype": dtype,
                    "ann": ann,
                    "hnsw": {
                        "connectivity": hnsw_connectivity,
                        "expansion_add": hnsw_expansion_add,
                        "expansion_search": hnsw_expansion_search,
                    },
                }
            tokenizer = BM25Tokenizer(settings) if use_bm25 else None
            docs = read_corpus(corpus, on_error=on_error, report=report.corpus)
            seg = _write_segment(
                path, docs, start=0, tokenizer=tokenizer, encoder=encoder, manifest=manifest,
                chunk_size=chunk_size, progress=progress, threads=threads,
                total=_corpus_size(corpus) if progress else None,
            )  # fmt: skip
            if seg is None or seg.count == 0:
                raise InputError(f"corpus {corpus!s:.200} has no documents to index ({report.corpus.to_dict()})")
            report.added = seg.count
            live = np.ones(seg.count, dtype=np.bool_)
            index = _commit(path, manifest, [seg], live, tokenizer, progress=progress, threads=threads)
            index.encoder = encoder
            report.seconds = time.perf_counter() - started
        return index

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        *,
        dense_model: str | os.PathLike[str] | BiEncoder | None = None,
        threads: int | None = None,
    ) -> Index:
        """Open the index in ``folder``.

        Args:
            folder: the index folder.
            dense_model: the bi-encoder to embed queries with; by default the one the index was built
                with. A model whose vectors differ from the index's (another model, other weights,
                pooling or prompts) is refused.
            threads: threads for encoding and search.

        Raises:
            IndexError_: no index, an interrupted first build, a damaged index, or a different dense model.
        """
        path = Path(folder)
        threads = threads or _cores()
        given = _encoder(dense_model, threads) if dense_model is not None else None
        loaded: dict[tuple[str, str], BiEncoder] = {}

        def load(generation: str) -> Index:
            manifest = read_manifest(path, generation)
            dense = manifest["dense"]
            encoder = given
            if dense is not None and encoder is None:
                key = (dense["source"], dense["backend"])
                if key not in loaded:  # once, even when a write makes the open start again
                    try:
                        loaded[key] = _encoder(dense["source"], threads, backend=dense["backend"])
                    except (ModelError, InputError) as err:
                        raise IndexError_(
                            f"index {path} needs its dense model {dense['source']!r}, which cannot be loaded ({err}); "
                            "pass dense_model= (--dense-model) pointing at the same model"
                        ) from err
                encoder = loaded[key]
            if dense is not None and encoder is not None:
                _check_fingerprint(path, dense["fingerprint"], encoder.fingerprint())
            return cls(path, manifest, encoder if dense is not None else None, threads)

        return open_current(path, load)

    @classmethod
    def verify(cls, folder: str | os.PathLike[str]) -> VerifyReport:
        """Return what reading every file of the current generation found: each damaged file, and leftovers.

        On top of what an open checks (names, counts, array lengths, file sizes, row ranges), this
        runs SQLite's integrity check on every ``docs.sqlite``, reads every term id and vector, and
        checks that no document id is live twice. No model is loaded.

        Raises:
            IndexError_: ``folder`` holds no index (a damaged one gets a report, not an error).
        """
        path = Path(folder)
        report = VerifyReport(folder=str(path))
        try:
            name = read_current(path)
        except IndexDamagedError as err:
            report.problems.append(err.detail)
            return report
        report.generation = name
        try:
            manifest = read_manifest(path, name)
        except IndexDamagedError as err:
            report.problems.append(err.detail)
            return report
        segments = [_Segment(**s) for s in manifest["segments"]]
        report.documents, report.segments = int(manifest["counts"]["documents"]), len(segments)
        report.files = sum(1 for p in (path / name).rglob("*") if p.is_file()) + sum(
            1 for s in segments if (path / "segments" / s.name).is_dir() for p in (path / "segments" / s.name).iterdir()
        )
        index: Index | None = None
        try:
            index = cls(path, manifest, None, 1)
        except IndexDamagedError as err:
            report.problems.append(err.detail)
        vocab = index._bm25.tokenizer.vocab_size if index is not None and index._bm25 is not None else None
        for seg in segments:
            report.problems += [p.detail for p in deep_check_segment(path, seg, manifest, vocab)]
        if index is not None:
            dup = duplicate_ids(path, segments, index.live)
            if dup is not None:
                report.problems.append(dup.detail)
            index.close()
        report.leftovers = sorted(_leftovers(path, name, {s.name for s in segments}))
        return report

    # ------------------------------------------------------------------ updates

    def add(
        self,
        corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
        *,
        on_conflict: Literal["error", "replace", "skip"] = "error",
        on_error: OnError = "raise",
        progress: bool = False,
        chunk_size: int = 2048,
        max_segments: int | None = MAX_SEGMENTS,
    ) -> WriteReport:
        """Add documents; with ``on_conflict="replace"`` an existing id is updated to the new version.

        Each add writes a segment. When that would leave more than ``max_segments`` segments, the
        same write merges them all into one, as :meth:`compact` does (so many small adds neither slow
        every query nor hold a file handle per segment); ``None`` never merges.
        The index object is reopened on the new generation when the write completes.

        Raises:
            InputError: a document id is already in the index (with ``on_conflict="error"``), or a bad record.
            IndexError_: another process is writing the index.
        """
        if on_conflict not in ("error", "replace", "skip"):
            raise ConfigError(f"on_conflict must be 'error', 'replace' or 'skip' (got {on_conflict!r})")
        if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)):
            raise ConfigError(f"max_segments must be a whole number >= 1 or None (got {max_segments!r})")
        if max_segments is not None and max_segments < 1:
            raise ConfigError(f"max_segments must be >= 1, or None never to merge (got {max_segments})")
        report = WriteReport()
        started = time.perf_counter()
        with _WriteLock(self.folder):
            tokenizer = self._check_current()
            manifest = json.loads(json.dumps(self.manifest))
            live = self.live.copy()
            replaced_slots: list[int] = []

            def checked(docs: Iterator[Doc]) -> Iterator[Doc]:
                batch: list[Doc] = []

                def flush() -> Iterator[Doc]:
                    found = self._slots_of([d.id for d in batch])
                    for d in batch:
                        slot = found.get(d.id)
                        if slot is None:
                            yield d
                        elif on_conflict == "error":
                            raise InputError(
                                f"document id {d.id!r} is already in the index; use update (on_conflict='replace', "
                                "--upsert) to replace it, or delete it first"
                            )
                        elif on_conflict == "replace":
                            replaced_slots.append(slot)
                            yield d
                    batch.clear()

                for d in docs:
                    batch.append(d)
                    if len(batch) >= 512:
                        yield from flush()
                yield from flush()

            docs = checked(read_corpus(corpus, on_error=on_error, report=report.corpus))
            start = self.segments[-1].start + self.segments[-1].count if self.segments else 0
            seg = _write_segment(
                self.folder, docs, start=start, tokenizer=tokenizer, encoder=self.encoder, manifest=manifest,
                chunk_size=chunk_size, progress=progress, threads=self.threads,
                total=_corpus_size(corpus) if progress else None,
            )  # fmt: skip
            segments = list(self.segments)
            if seg is not None and seg.count:
                segments.append(seg)
                live = np.concatenate([live, np.ones(seg.count, np.bool_)])
                report.added = seg.count - len(replaced_slots)
            live[np.array(replaced_slots, dtype=np.int64)] = False
            report.replaced = len(replaced_slots)
            if seg is None or seg.count == 0:
                if seg is not None:
                    shutil.rmtree(self.folder / "segments" / seg.name, ignore_errors=True)
                report.seconds = time.perf_counter() - started
                return report
            if max_segments is not None and len(segments) > max_segments:
                merged = _copy_live_rows(self.folder, segments, live, manifest, progress=progress, threads=self.threads)
                report.purged = int((~live).sum())
                segments, live = [merged], np.ones(merged.count, np.bool_)
            self._adopt(
                _commit(self.folder, manifest, segments, live, tokenizer, progress=progress, threads=self.threads)
            )
        report.seconds = time.perf_counter() - started
        return report

    def update(
        self,
        corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
        *,
        on_error: OnError = "raise",
        progress: bool = False,
        max_segments: int | None = MAX_SEGMENTS,
    ) -> WriteReport:
        """Add documents, replacing any with the same id (an upsert); see :meth:`add`."""
        return self.add(corpus, on_conflict="replace", on_error=on_error, progress=progress, max_segments=max_segments)

    def delete(self, ids: Iterable[str], *, missing: Literal["error", "ignore"] = "error") -> WriteReport:
        """Delete documents by id.

        Raises:
            InputError: an id is not in the index (with ``missing="error"``); nothing is deleted then.
        """
        report = WriteReport()
        started = time.perf_counter()
        wanted = list(dict.fromkeys(str(i) for i in ids))
        with _WriteLock(self.folder):
            tokenizer = self._check_current()
            found = self._slots_of(wanted)
            absent = [i for i in wanted if i not in found]
            if absent and missing == "error":
                raise InputError(
                    f"{len(absent)} id(s) not in the index, e.g. {absent[0]!r}; nothing was deleted "
                    "(pass missing='ignore' / --ignore-missing to delete the others)"
                )
            if not found:
                return report
            live = self.live.copy()
            live[np.fromiter(found.values(), dtype=np.int64)] = False
            if not live.any():
                raise InputError("deleting these ids would leave the index empty; build a new index instead")
            manifest = json.loads(json.dumps(self.manifest))
            fresh = _commit(
                self.folder, manifest, list(self.segments), live, tokenizer, progress=False, threads=self.threads
            )
            self._adopt(fresh)
            report.deleted = len(found)
        report.seconds = time.perf_counter() - started
        return report

    def compact(self, *, progress: bool = False) -> WriteReport:
        """Merge the segments into one and drop the rows of deleted and replaced documents.

        Each ``add`` writes a segment, and ``delete`` / ``update`` only mark rows dead, so an index
        that is updated often searches many segments and keeps dead rows on disk. Compacting copies
        the live documents' stored records, BM25 term ids and vectors as they are (nothing is
        re-analysed or re-embedded) into one segment, in the same order, rebuilds BM25 and, when due,
        the HNSW graph, and commits like any other write (crash-safe; readers are never blocked).
        Every first stage returns the same documents with the same scores before and after (dense
        scores up to the last float32 bit, which can swap near-ties).

        Returns:
            a report whose ``purged`` counts the dead rows dropped. An index that is one segment
            without dead rows is left as it is (only what killed writes left behind is removed).

        Raises:
            IndexError_: another process is writing the index, or it changed since it was opened.
        """
        report = WriteReport()
        started = time.perf_counter()
        with _WriteLock(self.folder):
            tokenizer = self._check_current()
            dead = int((~self.live).sum())
            if len(self.segments) <= 1 and dead == 0:  # nothing to merge; still clear what killed writes left
                _collect_garbage(self.folder, self.generation, {s.name for s in self.segments})
                report.seconds = time.perf_counter() - started
                return report
            manifest = json.loads(json.dumps(self.manifest))
            seg = _copy_live_rows(
                self.folder, self.segments, self.live, manifest, progress=progress, threads=self.threads
            )
            live = np.ones(seg.count, np.bool_)
            self._adopt(_commit(self.folder, manifest, [seg], live, tokenizer, progress=progress, threads=self.threads))
            report.purged = dead
        report.seconds = time.perf_counter() - started
        return report

    def _check_current(self) -> BM25Tokenizer | None:
        """Refuse a write unless the generation on disk is the one opened and its own files are still sound.

        Returns:
            the BM25 analyser with the generation's vocabulary, for the write to extend (``None``
            without BM25). The segments' files are checked when the write checks its new generation.
        """
        current = read_current(self.folder)
        if current != self.generation:
            raise IndexError_(
                f"index {self.folder} changed since it was opened (now {current}, opened {self.generation}); reopen it"
            )
        # a write never builds on, or removes, a generation damaged since it was opened
        manifest = read_manifest(self.folder, current)
        settings = _bm25_settings(self.folder, manifest)
        live = load_live(self.folder, current, manifest["counts"]["slots"], manifest["counts"]["documents"])
        if settings is None:
            return None
        bm25, _rows = _open_bm25(self.folder, manifest, settings, live, threads=1)
        return bm25.tokenizer

    def _adopt(self, fresh: Index) -> None:
        """Take over the files of ``fresh``, the generation a write of this object just committed."""
        self.close()
        for name in ("manifest", "generation", "segments", "live", "_bm25", "_bm25_rows", "_vectors", "_db", "_starts"):
            setattr(self, name, getattr(fresh, name))

    # ------------------------------------------------------------------ documents

    def _slots_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Return ``{id: slot}`` for the ids that are live in the index."""
        out: dict[str, int] = {}
        for seg, db in zip(self.segments, self._db, strict=True):
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                with self._db_lock, reading(self.folder, f"segments/{seg.name}/docs.sqlite"):
                    rows = db.execute(f"SELECT id, row FROM docs WHERE id IN ({marks})", chunk).fetchall()
                for doc_id, row in rows:
                    slot = seg.start + int(row)
                    if self.live[slot]:
                        out[str(doc_id)] = slot
        return out

    def documents(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """Return the records (``id``, ``title``, ``text``, ``metadata``?) at ``slots``, in that order."""
        slots_arr = np.asarray(slots, dtype=np.int64)
        seg_of = np.searchsorted(self._starts, slots_arr, side="right") - 1
        out: list[dict[str, Any] | None] = [None] * slots_arr.size
        for si in np.unique(seg_of).tolist():
            pos = np.flatnonzero(seg_of == si)
            rows = (slots_arr[pos] - self._starts[si]).tolist()
            marks = ",".join("?" * len(rows))
            file = f"segments/{self.segments[si].name}/docs.sqlite"
            with self._db_lock, reading(self.folder, file):
                found = {
                    int(r[0]): r[1:]
                    for r in self._db[si].execute(
                        f"SELECT row, id, title, text, metadata FROM docs WHERE row IN ({marks})", rows
                    )
                }
            for p, r in zip(pos.tolist(), rows, strict=True):
                if r not in found:
                    raise IndexDamagedError(self.folder, file, f"lacks row {r}, which the generation marks live")
                doc_id, title, text, meta = found[r]
                rec: dict[str, Any] = {"id": doc_id, "title": title, "text": text}
                if meta:
                    with reading(self.folder, file):
                        rec["metadata"] = json.loads(meta)
                out[p] = rec
        return [r for r in out if r is not None]

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Return the records with these ids (``None`` where an id is not in the index)."""
        found = self._slots_of(list(ids))
        slots = [found[i] for i in ids if i in found]
        recs = iter(self.documents(slots))
        return [next(recs) if i in found else None for i in ids]

    def doc_ids(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[str]:
        """Return the ids at ``slots``."""
        return [r["id"] for r in self.documents(slots)]

    # ------------------------------------------------------------------ search

    def retrieve(
        self,
        queries: Sequence[str],
        k: int = 100,
        *,
        retriever: Retriever | None = None,
        fusion: Literal["rrf", "interpolate"] | None = None,
        dense_weight: float | None = None,
    ) -> list[Candidates]:
        """Return each query's top ``k`` candidates from a first stage (slots and scores, best first).

        Args:
            queries: query texts.
            k: candidates per query.
            retriever: ``"bm25"``, ``"dense"`` or ``"hybrid"``; by default what the index was built for.
            fusion: for ``"hybrid"``: ``"rrf"`` or ``"interpolate"``; by default the index's setting.
            dense_weight: for interpolation, the dense share; by default the index's setting.

        Raises:
            ConfigError: the index lacks that first stage.
        """
        if isinstance(queries, str):
            raise InputError("pass a list of queries, not one string")
        retriever = retriever or self.default_retriever
        if retriever not in self.retrievers:
            raise ConfigError(
                f"this index cannot run retriever {retriever!r}; it was built with {self.manifest['retriever']!r} "
                f"(available: {', '.join(self.retrievers)}). Rebuild with --retriever hybrid to have all three"
            )
        if k < 1:
            raise InputError(f"k must be >= 1 (got {k})")
        if retriever == "bm25":
            return self._bm25_search(queries, k)
        if retriever == "dense":
            return self._dense_search(queries, k)
        fusion_cfg = dict(self.manifest["fusion"])
        if fusion is not None:
            if fusion not in ("rrf", "interpolate"):
                raise ConfigError(f"fusion must be 'rrf' or 'interpolate' (got {fusion!r})")
            fusion_cfg["method"] = fusion
        if dense_weight is not None:
            if not 0.0 <= dense_weight <= 1.0:
                raise ConfigError(f"dense_weight must be within [0, 1] (got {dense_weight})")
            fusion_cfg["dense_weight"] = dense_weight
        pool = max(k, 100)
        sparse = self._bm25_search(queries, pool)
        assert self.encoder is not None
        qv = self.encoder.encode_queries(list(queries))
        dense = self._dense_search(queries, pool, qv)
        if fusion_cfg["method"] == "rrf":
            rrf_k = int(fusion_cfg["rrf_k"])
            return [fuse_rrf(s, d, k=k, rrf_k=rrf_k) for s, d in zip(sparse, dense, strict=True)]
        out = []
        for qi, (s, d) in enumerate(zip(sparse, dense, strict=True)):
            union = np.union1d(s.slots, d.slots)
            out.append(
                fuse_interpolate(
                    union,
                    self._bm25_scores_of(queries[qi], union),
                    self._dense_scores_of(qv[qi : qi + 1], union),
                    k=k,
                    dense_weight=float(fusion_cfg["dense_weight"]),
                )
            )
        return out

    def _bm25_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        assert self._bm25 is not None and self._bm25_rows is not None
        out = []
        for rows, scores in self._bm25.search(queries, k):
            out.append(Candidates(self._bm25_rows[rows], scores))
        return out

    def _bm25_scores_of(self, query: str, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        assert self._bm25 is not None and self._bm25_rows is not None
        ids = self._bm25.tokenizer.queries([query])[0]
        if not ids:
            return np.zeros(slots.size, np.float32)
        all_scores = self._bm25.model.get_scores_from_ids(ids)
        rows = np.searchsorted(self._bm25_rows, slots)  # bm25 rows are the live slots, ascending
        return np.asarray(all_scores[rows], dtype=np.float32)

    def _dense_search(
        self, queries: Sequence[str], k: int, qv: npt.NDArray[np.float32] | None = None
    ) -> list[Candidates]:
        assert self.encoder is not None
        if qv is None:
            qv = self.encoder.encode_queries(list(queries))
        all_slots, all_scores = [], []
        for seg, reader in zip(self.segments, self._vectors, strict=True):
            rows, scores = reader.search(qv, k, self.live[seg.start : seg.start + seg.count])
            all_slots.append(rows + seg.start)
            all_scores.append(scores)
        slots = np.concatenate(all_slots, axis=1)
        scores = np.concatenate(all_scores, axis=1)
        out = []
        for qi in range(len(queries)):
            keep = np.isfinite(scores[qi])
            s, sc = slots[qi][keep], scores[qi][keep]
            order = np.lexsort((s, -sc))[:k]
            out.append(Candidates(s[order], sc[order]))
        return out

    def _dense_scores_of(self, qv: npt.NDArray[np.float32], slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.zeros(slots.size, np.float32)
        seg_of = np.searchsorted(self._starts, slots, side="right") - 1
        for si in np.unique(seg_of).tolist():
            pos = np.flatnonzero(seg_of == si)
            rows = (slots[pos] - self._starts[si])[None, :]
            out[pos] = self._vectors[si].dot(qv, rows)[0]
        return out

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        """Return the manifest with sizes on disk: what the index holds and how it was built."""
        out: dict[str, Any] = json.loads(json.dumps(self.manifest))
        out["folder"] = str(self.folder)
        out["bytes_on_disk"] = _du(self.folder)
        out["retrievers"] = self.retrievers
        return out


# ---------------------------------------------------------------------- writing


def _new_docs_store(folder: Path) -> sqlite3.Connection:
    """Create a segment's document store (``docs.sqlite``); the files are fsynced when the segment is sealed."""
    db = sqlite3.connect(folder / "docs.sqlite", uri=True)  # uri: compaction ATTACHes segments by URI
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL, title TEXT, text TEXT, metadata TEXT)")
    return db


def _write_segment(
    root: Path,
    docs: Iterable[Doc],
    *,
    start: int,
    tokenizer: BM25Tokenizer | None,
    encoder: BiEncoder | None,
    manifest: dict[str, Any],
    chunk_size: int,
    progress: bool,
    threads: int,
    total: int | None = None,
) -> _Segment | None:
    """Stream ``docs`` into a new segment folder; return it (``None`` when there was nothing to add).

    ``total`` is the number of records expected, for the progress bar (``None``: unknown).
    """
    (root / "segments").mkdir(exist_ok=True)
    tmp = root / f".tmp-seg-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    db = _new_docs_store(tmp)
    tok_fh = (tmp / "tokens.bin").open("wb") if tokenizer is not None else None
    len_fh = (tmp / "lengths.bin").open("wb") if tokenizer is not None else None
    dense = manifest.get("dense")
    writer = VectorWriter(tmp, encoder.dim, dense["dtype"]) if encoder is not None and dense else None
    count = 0
    bar = _progress(progress, "indexing")
    try:
        with bar as p:
            task = p.add_task("indexing", total=total) if p is not None else None
            for chunk in _chunks(docs, chunk_size):
                db.executemany(
                    "INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            count + i,
                            d.id,
                            d.title,
                            d.text,
                            json.dumps(d.metadata, ensure_ascii=False) if d.metadata else None,
                        )
                        for i, d in enumerate(chunk)
                    ],
                )
                contents = [d.content for d in chunk]
                if tokenizer is not None and tok_fh is not None and len_fh is not None:
                    flat, lengths = tokenizer.documents(contents)
                    tok_fh.write(flat.tobytes())
                    len_fh.write(lengths.tobytes())
                if writer is not None and encoder is not None:
                    writer.append(encoder.encode_documents(contents))
                count += len(chunk)
                if p is not None and task is not None:
                    p.update(task, advance=len(chunk))
            if p is not None and task is not None:
                p.update(task, total=count, completed=count)  # skipped records or blank lines: end at n/n
        db.execute("CREATE UNIQUE INDEX docs_id ON docs(id)")
        db.commit()
    except BaseException:
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for fh in (tok_fh, len_fh):
            if fh is not None:
                fh.close()
        if writer is not None:
            writer.close()
    db.close()
    if count == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    return _seal_segment(root, tmp, count=count, start=start, manifest=manifest, progress=progress, threads=threads)


def _seal_segment(
    root: Path, tmp: Path, *, count: int, start: int, manifest: dict[str, Any], progress: bool, threads: int
) -> _Segment:
    """Give a written segment folder its HNSW graph (when due), fsync it and rename it into ``segments/``."""
    hnsw = False
    dense = manifest.get("dense")
    if dense is not None:
        ann = dense["ann"]
        hnsw = ann == "hnsw" or (ann == "auto" and count >= HNSW_FROM)
        if hnsw:
            dim = int(dense["fingerprint"]["dim"])
            reader = VectorReader(tmp, count, dim, dense["dtype"], hnsw=False)
            with _progress(progress, "HNSW graph") as p:
                task = p.add_task("building the HNSW graph", total=count) if p is not None else None
                build_hnsw(
                    reader,
                    tmp / "hnsw.usearch",
                    connectivity=int(dense["hnsw"]["connectivity"]),
                    expansion_add=int(dense["hnsw"]["expansion_add"]),
                    threads=threads,
                )
                if p is not None and task is not None:
                    p.update(task, completed=count)
            del reader
    _fsync_tree(tmp)
    n = _next_number(root / "segments", "seg-")
    name = f"seg-{n:06d}"
    os.replace(tmp, root / "segments" / name)
    _fsync_dir(root / "segments")
    return _Segment(name=name, start=start, count=count, hnsw=hnsw)


def _copy_live_rows(
    root: Path,
    segments: Sequence[_Segment],
    live: npt.NDArray[np.bool_],
    manifest: dict[str, Any],
    *,
    progress: bool,
    threads: int,
    rows_per_step: int = 65536,
) -> _Segment:
    """Write one new segment holding the live rows of ``segments``, in slot order, copied as stored."""
    (root / "segments").mkdir(exist_ok=True)
    tmp = root / f".tmp-seg-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    dense = manifest.get("dense")
    dim = int(dense["fingerprint"]["dim"]) if dense else 0
    vec_dtype = np.int8 if dense and dense["dtype"] == "int8" else np.float32
    files: list[Any] = []
    db = _new_docs_store(tmp)
    try:
        db.execute("CREATE TEMP TABLE keep (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
        if dense:
            files.append(vec_fh := (tmp / "vectors.bin").open("wb"))
            if dense["dtype"] == "int8":
                files.append(scale_fh := (tmp / "scales.bin").open("wb"))
        count = 0
        with _progress(progress, "compacting") as p:
            task = p.add_task("copying the live documents", total=int(live.sum())) if p is not None else None
            for seg in segments:
                folder = root / "segments" / seg.name
                rows = np.flatnonzero(live[seg.start : seg.start + seg.count])
                if rows.size == 0:
                    continue
                # the records: one INSERT ... SELECT through an attached copy of the segment's store
                db.execute("DELETE FROM keep")
                db.executemany(
                    "INSERT INTO keep VALUES (?, ?)", zip(rows.tolist(), range(count, count + rows.size), strict=True)
                )
                db.execute("ATTACH DATABASE ? AS src", (readonly_uri(folder / "docs.sqlite"),))
                db.execute(
                    "INSERT INTO docs SELECT keep.new, d.id, d.title, d.text, d.metadata "
                    "FROM src.docs AS d JOIN keep ON d.row = keep.old ORDER BY keep.new"
                )
                db.commit()
                db.execute("DETACH DATABASE src")
                if dense:
                    reader = VectorReader(folder, seg.count, dim, dense["dtype"], hnsw=False)
                    for a in range(0, rows.size, rows_per_step):
                        part = rows[a : a + rows_per_step]
                        vec_fh.write(np.ascontiguousarray(reader.vectors[part], dtype=vec_dtype).tobytes())
                        if reader.scales is not None:
                            scale_fh.write(np.ascontiguousarray(reader.scales[part], dtype=np.float32).tobytes())
                    del reader
                count += int(rows.size)
                if p is not None and task is not None:
                    p.update(task, advance=int(rows.size))
        if manifest["bm25"] is not None:
            with (tmp / "tokens.bin").open("wb") as tok_fh, (tmp / "lengths.bin").open("wb") as len_fh:
                for flat, lengths in _LiveTokenChunks(root, list(segments), live):
                    tok_fh.write(flat.astype(np.int32).tobytes())
                    len_fh.write(lengths.astype(np.int32).tobytes())
        db.execute("CREATE UNIQUE INDEX docs_id ON docs(id)")
        db.commit()
        db.close()
        for fh in files:
            fh.close()
        files.clear()
        if count == 0:
            raise IndexError_(f"index {root} has no live documents to keep; build a new index instead")
        return _seal_segment(root, tmp, count=count, start=0, manifest=manifest, progress=progress, threads=threads)
    except BaseException:
        db.close()
        for fh in files:
            fh.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(
    root: Path,
    manifest: dict[str, Any],
    segments: list[_Segment],
    live: npt.NDArray[np.bool_],
    tokenizer: BM25Tokenizer | None,
    *,
    progress: bool,
    threads: int,
) -> Index:
    """Write a new generation for ``segments`` and ``live``, check it as an open does, then make it current.

    ``CURRENT`` moves (atomically) only once the new generation has passed the checks; the old
    generations are removed after that.

    Returns:
        the new generation, opened by the check (without a dense model: the caller sets it).

    Raises:
        IndexDamagedError: the new generation would be, or is, inconsistent; nothing changed.
    """
    n = _next_number(root, "gen-")
    name = f"gen-{n:06d}"
    check_live(root, f"{name}/live.npy", live, sum(s.count for s in segments))
    if [s.start for s in segments] != [sum(s.count for s in segments[:i]) for i in range(len(segments))]:
        raise IndexDamagedError(root, f"{name}/manifest.json", "would list segments that do not follow each other")
    tmp = root / f".tmp-gen-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        np.save(tmp / "live.npy", live)
        if tokenizer is not None and manifest["bm25"] is not None:
            tokenizer.save(tmp / "vocab.json")
            settings = BM25Settings.from_dict(manifest["bm25"])
            chunks = _LiveTokenChunks(root, segments, live)
            with _progress(progress, "BM25") as p:
                n_live = int(live.sum())
                task = p.add_task("building the BM25 matrix", total=n_live) if p is not None else None
                build_bm25(chunks, num_terms=max(tokenizer.vocab_size, 1), settings=settings, folder=tmp / "bm25")
                if p is not None and task is not None:
                    p.update(task, completed=n_live)
            np.save(tmp / "bm25_rows.npy", np.flatnonzero(live).astype(np.int64))
        manifest["generation"] = name
        manifest["segments"] = [s.to_dict() for s in segments]
        manifest["updated"] = _now()
        manifest["counts"] = {
            "documents": int(live.sum()),
            "slots": int(live.size),
            "deleted": int((~live).sum()),
            "segments": len(segments),
            "bm25_terms": tokenizer.vocab_size if tokenizer is not None else 0,
        }
        manifest["versions"] = _versions()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        _fsync_tree(tmp)
        os.replace(tmp, root / name)
        _fsync_dir(root)
        # the checks an open runs, on what was written: CURRENT never moves to a generation that fails them
        checked = Index(root, read_manifest(root, name), None, threads)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root / name, ignore_errors=True)
        raise
    try:
        _atomic_write(root / "CURRENT", name + "\n")
    except BaseException:
        checked.close()
        raise
    _collect_garbage(root, name, {s.name for s in segments})
    return checked


class _LiveTokenChunks:
    """Re-iterable chunks of (term ids, lengths) of the live documents, read from the segments."""

    def __init__(self, root: Path, segments: list[_Segment], live: npt.NDArray[np.bool_], docs_per_chunk: int = 50_000):
        self.root, self.segments, self.live, self.per = root, segments, live, docs_per_chunk

    def __iter__(self) -> Iterator[tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]]:
        for seg in self.segments:
            folder = self.root / "segments" / seg.name
            lengths = np.fromfile(folder / "lengths.bin", dtype=np.int32)
            tokens = (
                np.memmap(folder / "tokens.bin", dtype=np.int32, mode="r") if lengths.sum() else np.zeros(0, np.int32)
            )
            offsets = np.zeros(lengths.size + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            seg_live = self.live[seg.start : seg.start + seg.count]
            for a in range(0, seg.count, self.per):
                b = min(a + self.per, seg.count)
                flat = np.asarray(tokens[offsets[a] : offsets[b]])
                lens = lengths[a:b]
                keep = seg_live[a:b]
                if not keep.all():
                    flat = flat[np.repeat(keep, lens)]
                    lens = lens[keep]
                if lens.size:
                    yield flat, lens


def _collect_garbage(root: Path, current: str, segments: set[str]) -> None:
    """Remove old generations, unreferenced segments and whatever a killed write left (folders or files)."""
    for rel in list(_leftovers(root, current, segments)):
        _remove(root / rel)


def _bm25_settings(folder: Path, manifest: dict[str, Any]) -> BM25Settings | None:
    with reading(folder, f"{manifest['generation']}/manifest.json"):
        return BM25Settings.from_dict(manifest["bm25"]) if manifest["bm25"] is not None else None


def _open_bm25(
    folder: Path, manifest: dict[str, Any], settings: BM25Settings, live: npt.NDArray[np.bool_], threads: int
) -> tuple[BM25Index, npt.NDArray[np.int64]]:
    """Open a generation's BM25 index (vocabulary, matrix, rows), checked against the manifest and ``live``."""
    gen = str(manifest["generation"])
    counts = manifest["counts"]
    with reading(folder, f"{gen}/vocab.json"):
        tokenizer = BM25Tokenizer(settings, folder / gen / "vocab.json")
        terms = tokenizer.vocab_size
    if terms != counts["bm25_terms"]:
        raise IndexDamagedError(
            folder, f"{gen}/vocab.json", f"holds {terms} terms; the manifest counts {counts['bm25_terms']}"
        )
    with reading(folder, f"{gen}/bm25"):
        bm25 = BM25Index(folder / gen / "bm25", tokenizer, threads=threads)
    check_bm25_matrix(folder, gen, bm25.model.scores, counts["documents"], terms)
    return bm25, load_bm25_rows(folder, gen, live)


def _leftovers(root: Path, current: str, segments: set[str]) -> Iterator[str]:
    """Yield what :func:`_collect_garbage` would remove, relative to ``root``."""
    for p in root.iterdir():
        if (p.name.startswith("gen-") and p.name != current) or p.name.startswith(".tmp-"):
            yield p.name
    seg_root = root / "segments"
    if seg_root.is_dir():
        for p in seg_root.iterdir():
            if p.name not in segments:
                yield f"segments/{p.name}"


def _check_fingerprint(path: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse a dense model whose vectors differ from the index's (another model, weights, pooling, prompts)."""
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        detail = ", ".join(f"{k}: index {theirs.get(k)!r} vs given {ours.get(k)!r}" for k in diff)
        raise IndexError_(
            f"index {path} was built with dense model {theirs.get('model')!r}, and the model given now "
            f"differs ({detail}); its query vectors would not match the index. Open it without a "
            "dense model (it loads its own), or rebuild the index with the new model"
        )


def _remove(path: Path) -> None:
    """Delete a folder tree or a single file; a killed write leaves both kinds (e.g. ``.tmp-CURRENT-*``)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _WriteLock:
    """An exclusive lock on the index folder for the length of one write (``fcntl.flock``)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.fh: Any = None

    def __enter__(self) -> _WriteLock:
        self.fh = self.path.open("a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self.fh.close()
            raise IndexError_(
                f"another process is writing the index at {self.path.parent}; wait for it to finish"
            ) from err
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(d)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _next_number(folder: Path, prefix: str) -> int:
    nums = [
        int(p.name[len(prefix) :])
        for p in folder.iterdir()
        if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()
    ]
    return max(nums, default=0) + 1


def _chunks(items: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encoder(model: str | os.PathLike[str] | BiEncoder, threads: int, backend: str = "auto") -> BiEncoder:
    if isinstance(model, BiEncoder):
        return model
    return BiEncoder(model, threads=threads, backend=backend)  # type: ignore[arg-type]


def _model_source(encoder: BiEncoder) -> str:
    files = encoder.files
    if files.builtin:
        return files.builtin
    p = Path(files.name)
    return str(p.resolve()) if p.exists() else files.name


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("crossrank", "bm25s", "usearch", "onnxruntime", "tokenizers", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _cores() -> int:
    from crossrank.rerank.backends import default_threads

    return default_threads()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Documents per second."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} docs/s" if speed else "- docs/s", style="progress.data.speed")

    return RateColumn()


def _corpus_size(corpus: str | os.PathLike[str] | Iterable[Any]) -> int | None:
    """Return how many records ``corpus`` holds, for a progress bar's total (``None``: not knowable cheaply).

    A file counts its lines (one pass over the bytes; blank lines count too, so the bar's total
    is corrected when the write ends); a sized collection its length; a generator is not read.
    """
    if isinstance(corpus, (str, os.PathLike)):
        try:
            path = corpus_file(corpus)
            lines, last = 0, b"\n"
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    lines += block.count(b"\n")
                    last = block[-1:]
        except (InputError, OSError):
            return None  # the reader itself reports a missing or unreadable corpus
        return lines + (last != b"\n")
    if isinstance(corpus, Sized) and not isinstance(corpus, Mapping):
        return len(corpus)
    return None


@contextlib.contextmanager
def _progress(enabled: bool, what: str) -> Iterator[Any]:
    """Yield a rich Progress showing count and documents per second, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),
        TimeElapsedColumn(),
        transient=False,
        console=Console(stderr=True),  # stdout carries results (the CLI prints the manifest there)
    ) as p:
        yield p
