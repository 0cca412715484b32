"""A persistent, crash-safe retrieval index folder: BM25, dense vectors, or both.

:class:`Index` ties together the parts, each in its own module:

- :mod:`crossrank.retrieve.generations`: the on-disk format's crash-safe generations (``CURRENT``,
  the write lock, commits, garbage collection), on :mod:`crossrank.retrieve.durable` file writes;
- :mod:`crossrank.retrieve.index_files`: the checks that a generation's files agree with its manifest;
- :mod:`crossrank.retrieve.manifest`: the manifest and the build settings as typed values;
- :mod:`crossrank.retrieve.segments`: immutable segments and their SQLite document stores;
- :mod:`crossrank.retrieve.retrievers`: BM25 and dense first stages, and hybrid fusion.

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

import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError, IndexStateError, InputError, ModelError
from crossrank.retrieve.bm25 import BM25Index, BM25Settings, BM25Tokenizer
from crossrank.retrieve.corpus import CorpusReport, Doc, OnError, read_corpus
from crossrank.retrieve.durable import disk_usage
from crossrank.retrieve.embed import BiEncoder
from crossrank.retrieve.fusion import Candidates
from crossrank.retrieve.generations import WriteLock, collect_garbage, commit_generation, leftovers, now
from crossrank.retrieve.index_files import (
    FORMAT,
    IndexDamagedError,
    IndexError_,
    check_segment_files,
    deep_check_segment,
    duplicate_ids,
    load_live,
    open_current,
    read_current,
    read_manifest,
)
from crossrank.retrieve.manifest import FUSIONS, IndexConfig, Manifest, Retriever, SegmentInfo
from crossrank.retrieve.progress import corpus_size
from crossrank.retrieve.protocols import FirstStage, Retrieved
from crossrank.retrieve.retrievers import BM25Retriever, DenseRetriever, Hybrid, bm25_settings, open_bm25, open_vectors
from crossrank.retrieve.segments import SegmentDocs, copy_live_rows, write_segment
from crossrank.retrieve.vectors import VectorReader

__all__ = [
    "Index",
    "IndexConfig",
    "IndexDamagedError",
    "IndexError_",
    "IndexStateError",
    "Retriever",
    "VerifyReport",
    "WriteReport",
]

#: an ``add`` that would leave more segments than this merges them all in the same write
MAX_SEGMENTS = 32
# the names these had when they lived here
_WriteLock = WriteLock
_du = disk_usage
_Segment = SegmentInfo


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


class Index:
    """A retrieval index in a folder. Use :meth:`build` to make one and :meth:`open` to reopen it.

    It is also a :class:`~crossrank.retrieve.protocols.DocumentStore` (:meth:`get`), and
    :meth:`first_stage` returns its BM25, dense and hybrid first stages.

    Example:
        >>> idx = Index.build("my-index", "corpus.jsonl", retriever="hybrid")  # doctest: +SKIP
        >>> idx = Index.open("my-index")  # doctest: +SKIP
        >>> idx.retrieve(["what is a cat"], k=100)  # doctest: +SKIP
        >>> idx.first_stage("bm25").retrieve(["what is a cat"], k=10)[0].doc_ids  # doctest: +SKIP
    """

    def __init__(
        self, folder: Path, manifest: Manifest | Mapping[str, Any], encoder: BiEncoder | None, threads: int
    ) -> None:
        """Open the generation ``manifest`` describes (as :func:`read_manifest` returns it), checking its files.

        Raises:
            IndexDamagedError: a file is missing, unreadable, or disagrees with the manifest.
        """
        manifest = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
        assert manifest.counts is not None and manifest.generation is not None
        self.folder = folder
        self.manifest = manifest
        self.generation = gen_name = manifest.generation
        self.segments = list(manifest.segments)
        self.has_bm25 = manifest.bm25 is not None
        self.has_dense = manifest.dense is not None
        self.threads = threads
        self.encoder = encoder
        self._bm25: BM25Index | None = None
        self._bm25_rows: npt.NDArray[np.int64] | None = None
        self._vectors: list[VectorReader] = []
        self._docs: SegmentDocs | None = None
        self.bm25_settings = bm25_settings(folder, manifest)
        self.live: npt.NDArray[np.bool_] = load_live(folder, gen_name, manifest.counts.slots, manifest.documents)
        try:
            plain = manifest.to_dict()
            for seg in self.segments:
                check_segment_files(folder, seg, plain)
            if self.bm25_settings is not None:
                self._bm25, self._bm25_rows = open_bm25(folder, manifest, self.bm25_settings, self.live, threads)
            if self.has_dense:
                self._vectors = open_vectors(folder, manifest, self.segments)
            self._docs = SegmentDocs(folder, self.segments)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self.manifest.documents

    def __repr__(self) -> str:
        kinds = [k for k, v in (("bm25", self.has_bm25), ("dense", self.has_dense)) if v]
        return f"Index({str(self.folder)!r}, documents={len(self)}, retrievers={'+'.join(kinds)})"

    def close(self) -> None:
        """Close the document store."""
        if self._docs is not None:
            self._docs.close()

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
        return self.manifest.retriever

    # ------------------------------------------------------------------ build / open

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike[str],
        corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Doc],
        config: IndexConfig | None = None,
        *,
        overwrite: bool = False,
        progress: bool = False,
        threads: int | None = None,
        report: WriteReport | None = None,
        **settings: Any,
    ) -> Index:
        """Build an index of ``corpus`` in ``folder`` and return it opened.

        Args:
            folder: where the index lives; created if missing.
            corpus: a BEIR folder, a JSONL file, or an iterable of records ``{"id", "text", "title"?, ...}``.
            config: how to build it (see :class:`IndexConfig`); or give its fields as keyword
                arguments (``retriever="hybrid"``, ``dense_model=...``, ``fusion=...``), not both.
            overwrite: replace an index already in ``folder`` (atomically: the old one stays
                readable until the new one is complete).
            progress: show a progress bar with documents per second.
            threads: threads for encoding and search; defaults to the cores this process may use.
            report: filled in with what the build did.
            **settings: the fields of :class:`IndexConfig`, when ``config`` is not given.

        Raises:
            IndexStateError: ``folder`` holds an index and ``overwrite`` is false, or another process writes it.
            InputError: a bad record (with ``on_error="raise"``), or an empty corpus.
            ConfigError: bad settings.
        """
        if config is not None and settings:
            raise ConfigError(
                f"give the settings as config= or as keyword arguments, not both (got config and {sorted(settings)})"
            )
        cfg = config if config is not None else IndexConfig.from_kwargs(settings)
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        if (path / "CURRENT").exists() and not overwrite:
            raise IndexStateError(f"{path} already holds an index; pass overwrite=True (--overwrite) or use add/delete")
        threads = threads or _cores()
        with WriteLock(path):
            started = time.perf_counter()
            report = report if report is not None else WriteReport()
            use_bm25 = cfg.retriever in ("bm25", "hybrid")
            use_dense = cfg.retriever in ("dense", "hybrid")
            settings_bm25 = cfg.bm25 or BM25Settings()
            encoder = _encoder(cfg.dense_model, threads) if use_dense else None
            manifest = Manifest(
                format=FORMAT,
                retriever=cfg.retriever,
                bm25=settings_bm25.to_dict() if use_bm25 else None,
                dense=_dense_spec(encoder, cfg) if encoder is not None else None,
                fusion={"method": cfg.fusion, "rrf_k": cfg.rrf_k, "dense_weight": cfg.dense_weight},
                created=now(),
            )
            tokenizer = BM25Tokenizer(settings_bm25) if use_bm25 else None
            docs = read_corpus(corpus, on_error=cfg.on_error, report=report.corpus)
            seg = write_segment(
                path, docs, start=0, tokenizer=tokenizer, encoder=encoder, manifest=manifest,
                chunk_size=cfg.chunk_size, progress=progress, threads=threads,
                total=corpus_size(corpus) if progress else None,
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
            IndexStateError: no index, an interrupted first build, a damaged index, or a different dense model.
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
                        raise IndexStateError(
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
            IndexStateError: ``folder`` holds no index (a damaged one gets a report, not an error).
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
        segments = [SegmentInfo(**s) for s in manifest["segments"]]
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
        report.leftovers = sorted(leftovers(path, name, {s.name for s in segments}))
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
            IndexStateError: another process is writing the index.
        """
        if on_conflict not in ("error", "replace", "skip"):
            raise ConfigError(f"on_conflict must be 'error', 'replace' or 'skip' (got {on_conflict!r})")
        if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)):
            raise ConfigError(f"max_segments must be a whole number >= 1 or None (got {max_segments!r})")
        if max_segments is not None and max_segments < 1:
            raise ConfigError(f"max_segments must be >= 1, or None never to merge (got {max_segments})")
        report = WriteReport()
        started = time.perf_counter()
        with WriteLock(self.folder):
            tokenizer = self._check_current()
            manifest = self.manifest
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
            seg = write_segment(
                self.folder, docs, start=start, tokenizer=tokenizer, encoder=self.encoder, manifest=manifest,
                chunk_size=chunk_size, progress=progress, threads=self.threads,
                total=corpus_size(corpus) if progress else None,
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
                merged = copy_live_rows(self.folder, segments, live, manifest, progress=progress, threads=self.threads)
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
        with WriteLock(self.folder):
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
            manifest = self.manifest
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
            IndexStateError: another process is writing the index, or it changed since it was opened.
        """
        report = WriteReport()
        started = time.perf_counter()
        with WriteLock(self.folder):
            tokenizer = self._check_current()
            dead = int((~self.live).sum())
            if len(self.segments) <= 1 and dead == 0:  # nothing to merge; still clear what killed writes left
                collect_garbage(self.folder, self.generation, {s.name for s in self.segments})
                report.seconds = time.perf_counter() - started
                return report
            manifest = self.manifest
            seg = copy_live_rows(
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
            raise IndexStateError(
                f"index {self.folder} changed since it was opened (now {current}, opened {self.generation}); reopen it"
            )
        # a write never builds on, or removes, a generation damaged since it was opened
        manifest = Manifest.from_dict(read_manifest(self.folder, current))
        settings = bm25_settings(self.folder, manifest)
        live = load_live(self.folder, current, manifest.slots, manifest.documents)
        if settings is None:
            return None
        bm25, _rows = open_bm25(self.folder, manifest, settings, live, threads=1)
        return bm25.tokenizer

    def _adopt(self, fresh: Index) -> None:
        """Take over the files of ``fresh``, the generation a write of this object just committed."""
        self.close()
        for name in ("manifest", "generation", "segments", "live", "_bm25", "_bm25_rows", "_vectors", "_docs"):
            setattr(self, name, getattr(fresh, name))

    # ------------------------------------------------------------------ documents

    # ------------------------------------------------------------------ documents

    @property
    def _store(self) -> SegmentDocs:
        assert self._docs is not None
        return self._docs

    def _slots_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Return ``{id: slot}`` for the ids that are live in the index."""
        return self._store.slots_of(ids, self.live)

    def documents(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """Return the records (``id``, ``title``, ``text``, ``metadata``?) at ``slots``, in that order."""
        return self._store.records(slots)

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Return the records with these ids (``None`` where an id is not in the index)."""
        found = self._slots_of(list(ids))
        slots = [found[i] for i in ids if i in found]
        recs = iter(self.documents(slots))
        return [next(recs) if i in found else None for i in ids]

    def doc_ids(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[str]:
        """Return the ids at ``slots``."""
        return self._store.ids_at(slots)

    def _with_ids(self, candidates: list[Candidates]) -> list[Retrieved]:
        """Return first-stage candidates by slot as candidates by document id."""
        return [Retrieved(tuple(self.doc_ids(c.slots)), c.scores) for c in candidates]

    # ------------------------------------------------------------------ search

    def first_stage(
        self,
        retriever: Retriever | None = None,
        *,
        fusion: Literal["rrf", "interpolate"] | None = None,
        dense_weight: float | None = None,
    ) -> FirstStage:
        """Return one of the index's first stages, which returns document ids and scores.

        They search the generation this object has open, also after it writes a new one.

        Args:
            retriever: ``"bm25"``, ``"dense"`` or ``"hybrid"``; by default what the index was built for.
            fusion: for ``"hybrid"``: ``"rrf"`` or ``"interpolate"``; by default the index's setting.
            dense_weight: for interpolation, the dense share; by default the index's setting.

        Raises:
            ConfigError: the index lacks that first stage, or a setting is not allowed.
        """
        retriever = retriever or self.default_retriever
        if retriever not in self.retrievers:
            raise ConfigError(
                f"this index cannot run retriever {retriever!r}; it was built with {self.manifest.retriever!r} "
                f"(available: {', '.join(self.retrievers)}). Rebuild with --retriever hybrid to have all three"
            )
        if fusion is not None and fusion not in FUSIONS:
            raise ConfigError(f"fusion must be 'rrf' or 'interpolate' (got {fusion!r})")
        if dense_weight is not None and not 0.0 <= dense_weight <= 1.0:
            raise ConfigError(f"dense_weight must be within [0, 1] (got {dense_weight})")
        if retriever == "bm25":
            return BM25Retriever(self)
        if retriever == "dense":
            return DenseRetriever(self)
        cfg = self.manifest.fusion
        return Hybrid(
            BM25Retriever(self),
            DenseRetriever(self),
            fusion=fusion or cfg["method"],
            rrf_k=int(cfg["rrf_k"]),
            second_weight=float(cfg["dense_weight"] if dense_weight is None else dense_weight),
        )

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

        :meth:`first_stage` returns the same first stages with document ids instead of slots.

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
        stage = self.first_stage(retriever, fusion=fusion, dense_weight=dense_weight)
        if k < 1:
            raise InputError(f"k must be >= 1 (got {k})")
        assert isinstance(stage, (BM25Retriever, DenseRetriever, Hybrid))
        return stage._slot_retrieve(queries, k)

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        """Return the manifest with sizes on disk: what the index holds and how it was built."""
        out: dict[str, Any] = self.manifest.to_dict()
        out["folder"] = str(self.folder)
        out["bytes_on_disk"] = disk_usage(self.folder)
        out["retrievers"] = self.retrievers
        return out


def _commit(
    root: Path,
    manifest: Manifest,
    segments: list[SegmentInfo],
    live: npt.NDArray[np.bool_],
    tokenizer: BM25Tokenizer | None,
    *,
    progress: bool,
    threads: int,
) -> Index:
    """Commit a new generation (see :func:`commit_generation`), checked by opening it as a reader would.

    Returns:
        the new generation, opened by the check (without a dense model: the caller sets it).
    """
    return commit_generation(
        root,
        manifest,
        segments,
        live,
        tokenizer,
        check=lambda name: Index(root, read_manifest(root, name), None, threads),
        on_checked_fail=lambda index: index.close(),
        progress=progress,
    )


def _dense_spec(encoder: BiEncoder, cfg: IndexConfig) -> dict[str, Any]:
    """Return the manifest's ``dense`` object: the model's fingerprint and how vectors are stored."""
    return {
        "fingerprint": encoder.fingerprint(),
        "source": _model_source(encoder),
        "backend": encoder.backend_name,
        "dtype": cfg.dtype,
        "ann": cfg.ann,
        "hnsw": {
            "connectivity": cfg.hnsw_connectivity,
            "expansion_add": cfg.hnsw_expansion_add,
            "expansion_search": cfg.hnsw_expansion_search,
        },
    }


def _check_fingerprint(path: Path, theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> None:
    """Refuse a dense model whose vectors differ from the index's (another model, weights, pooling, prompts)."""
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        detail = ", ".join(f"{k}: index {theirs.get(k)!r} vs given {ours.get(k)!r}" for k in diff)
        raise IndexStateError(
            f"index {path} was built with dense model {theirs.get('model')!r}, and the model given now "
            f"differs ({detail}); its query vectors would not match the index. Open it without a "
            "dense model (it loads its own), or rebuild the index with the new model"
        )


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


def _cores() -> int:
    from crossrank.cpu import available_cores

    return available_cores()
