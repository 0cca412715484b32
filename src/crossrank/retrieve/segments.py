"""Segments: immutable folders of documents, and the SQLite store that returns their records.

A segment (``segments/seg-NNNNNN/``) holds ``docs.sqlite`` (one row per document: ``row``, ``id``,
``title``, ``text``, ``metadata``), the BM25 term ids of each document (``tokens.bin``,
``lengths.bin``), and its vectors (``vectors.bin``, ``scales.bin`` for int8, ``hnsw.usearch``).
It is written under a temporary name, fsynced and renamed into place, and never changed after.
A document's *slot* is its segment's ``start`` plus its row; a generation's ``live.npy`` says
which slots are live.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import IndexStateError
from crossrank.retrieve.bm25 import BM25Tokenizer
from crossrank.retrieve.corpus import Doc
from crossrank.retrieve.durable import fsync_dir, fsync_tree, next_number
from crossrank.retrieve.embed import BiEncoder
from crossrank.retrieve.index_files import IndexDamagedError, open_docs_store, reading, readonly_uri
from crossrank.retrieve.manifest import Manifest, SegmentInfo
from crossrank.retrieve.progress import progress_bar
from crossrank.retrieve.vectors import VectorReader, VectorWriter, build_hnsw

__all__ = ["HNSW_FROM", "LiveTokenChunks", "SegmentDocs", "copy_live_rows", "write_segment"]

#: with ``ann="auto"``, a segment gets an HNSW graph from this many vectors up
HNSW_FROM = 50_000


class SegmentDocs:
    """The document stores of a generation's segments, open for reading (one SQLite connection each).

    Args:
        folder: the index folder.
        segments: the generation's segments, in slot order.

    Raises:
        IndexDamagedError: a ``docs.sqlite`` cannot be opened.
    """

    def __init__(self, folder: Path, segments: Sequence[SegmentInfo]) -> None:
        self.folder = folder
        self.segments = list(segments)
        self._db: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # one SQLite connection per segment, shared by threads
        try:
            for seg in self.segments:
                self._db.append(open_docs_store(folder, seg))
        except BaseException:
            self.close()
            raise
        self.starts = np.array([s.start for s in self.segments], dtype=np.int64)

    def close(self) -> None:
        """Close the connections."""
        for db in self._db:
            db.close()

    def slots_of(self, ids: Sequence[str], live: npt.NDArray[np.bool_]) -> dict[str, int]:
        """Return ``{id: slot}`` for the ids that are live."""
        out: dict[str, int] = {}
        for seg, db in zip(self.segments, self._db, strict=True):
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                with self._lock, reading(self.folder, f"segments/{seg.name}/docs.sqlite"):
                    rows = db.execute(f"SELECT id, row FROM docs WHERE id IN ({marks})", chunk).fetchall()
                for doc_id, row in rows:
                    slot = seg.start + int(row)
                    if live[slot]:
                        out[str(doc_id)] = slot
        return out

    def records(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """Return the records (``id``, ``title``, ``text``, ``metadata``?) at ``slots``, in that order.

        Raises:
            IndexDamagedError: a store lacks a row asked for.
        """
        return self._read(slots, "row, id, title, text, metadata", _record)

    def ids_at(self, slots: Sequence[int] | npt.NDArray[np.int64]) -> list[str]:
        """Return the document ids at ``slots``, in that order (reading only the ids)."""
        return self._read(slots, "row, id", lambda folder, file, row: str(row[0]))

    def _read(self, slots: Sequence[int] | npt.NDArray[np.int64], columns: str, make: Any) -> list[Any]:
        slots_arr = np.asarray(slots, dtype=np.int64)
        seg_of = np.searchsorted(self.starts, slots_arr, side="right") - 1
        out: list[Any] = [None] * slots_arr.size
        for si in np.unique(seg_of).tolist():
            pos = np.flatnonzero(seg_of == si)
            rows = (slots_arr[pos] - self.starts[si]).tolist()
            marks = ",".join("?" * len(rows))
            file = f"segments/{self.segments[si].name}/docs.sqlite"
            with self._lock, reading(self.folder, file):
                found = {
                    int(r[0]): r[1:]
                    for r in self._db[si].execute(f"SELECT {columns} FROM docs WHERE row IN ({marks})", rows)
                }
            for p, r in zip(pos.tolist(), rows, strict=True):
                if r not in found:
                    raise IndexDamagedError(self.folder, file, f"lacks row {r}, which the generation marks live")
                out[p] = make(self.folder, file, found[r])
        return [r for r in out if r is not None]


def _record(folder: Path, file: str, row: tuple[Any, ...]) -> dict[str, Any]:
    doc_id, title, text, meta = row
    rec: dict[str, Any] = {"id": doc_id, "title": title, "text": text}
    if meta:
        with reading(folder, file):
            rec["metadata"] = json.loads(meta)
    return rec


def new_docs_store(folder: Path) -> sqlite3.Connection:
    """Create a segment's document store (``docs.sqlite``); the files are fsynced when the segment is sealed."""
    db = sqlite3.connect(folder / "docs.sqlite", uri=True)  # uri: compaction ATTACHes segments by URI
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL, title TEXT, text TEXT, metadata TEXT)")
    return db


def write_segment(
    root: Path,
    docs: Iterable[Doc],
    *,
    start: int,
    tokenizer: BM25Tokenizer | None,
    encoder: BiEncoder | None,
    manifest: Manifest,
    chunk_size: int,
    progress: bool,
    threads: int,
    total: int | None = None,
) -> SegmentInfo | None:
    """Stream ``docs`` into a new segment folder; return it (``None`` when there was nothing to add).

    ``total`` is the number of records expected, for the progress bar (``None``: unknown).
    """
    (root / "segments").mkdir(exist_ok=True)
    tmp = root / f".tmp-seg-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    db = new_docs_store(tmp)
    tok_fh = (tmp / "tokens.bin").open("wb") if tokenizer is not None else None
    len_fh = (tmp / "lengths.bin").open("wb") if tokenizer is not None else None
    dense = manifest.dense
    writer = VectorWriter(tmp, encoder.dim, dense["dtype"]) if encoder is not None and dense else None
    count = 0
    bar = progress_bar(progress, "indexing")
    try:
        with bar as p:
            task = p.add_task("indexing", total=total) if p is not None else None
            for chunk in chunks(docs, chunk_size):
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
    return seal_segment(root, tmp, count=count, start=start, manifest=manifest, progress=progress, threads=threads)


def seal_segment(
    root: Path, tmp: Path, *, count: int, start: int, manifest: Manifest, progress: bool, threads: int
) -> SegmentInfo:
    """Give a written segment folder its HNSW graph (when due), fsync it and rename it into ``segments/``."""
    hnsw = False
    dense = manifest.dense
    if dense is not None:
        ann = dense["ann"]
        hnsw = ann == "hnsw" or (ann == "auto" and count >= HNSW_FROM)
        if hnsw:
            dim = int(dense["fingerprint"]["dim"])
            reader = VectorReader(tmp, count, dim, dense["dtype"], hnsw=False)
            with progress_bar(progress, "HNSW graph") as p:
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
    fsync_tree(tmp)
    n = next_number(root / "segments", "seg-")
    name = f"seg-{n:06d}"
    os.replace(tmp, root / "segments" / name)
    fsync_dir(root / "segments")
    return SegmentInfo(name=name, start=start, count=count, hnsw=hnsw)


def copy_live_rows(
    root: Path,
    segments: Sequence[SegmentInfo],
    live: npt.NDArray[np.bool_],
    manifest: Manifest,
    *,
    progress: bool,
    threads: int,
    rows_per_step: int = 65536,
) -> SegmentInfo:
    """Write one new segment holding the live rows of ``segments``, in slot order, copied as stored."""
    (root / "segments").mkdir(exist_ok=True)
    tmp = root / f".tmp-seg-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    dense = manifest.dense
    dim = int(dense["fingerprint"]["dim"]) if dense else 0
    vec_dtype = np.int8 if dense and dense["dtype"] == "int8" else np.float32
    files: list[Any] = []
    db = new_docs_store(tmp)
    try:
        db.execute("CREATE TEMP TABLE keep (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
        if dense:
            files.append(vec_fh := (tmp / "vectors.bin").open("wb"))
            if dense["dtype"] == "int8":
                files.append(scale_fh := (tmp / "scales.bin").open("wb"))
        count = 0
        with progress_bar(progress, "compacting") as p:
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
        if manifest.bm25 is not None:
            with (tmp / "tokens.bin").open("wb") as tok_fh, (tmp / "lengths.bin").open("wb") as len_fh:
                for flat, lengths in LiveTokenChunks(root, list(segments), live):
                    tok_fh.write(flat.astype(np.int32).tobytes())
                    len_fh.write(lengths.astype(np.int32).tobytes())
        db.execute("CREATE UNIQUE INDEX docs_id ON docs(id)")
        db.commit()
        db.close()
        for fh in files:
            fh.close()
        files.clear()
        if count == 0:
            raise IndexStateError(f"index {root} has no live documents to keep; build a new index instead")
        return seal_segment(root, tmp, count=count, start=0, manifest=manifest, progress=progress, threads=threads)
    except BaseException:
        db.close()
        for fh in files:
            fh.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class LiveTokenChunks:
    """Re-iterable chunks of (term ids, lengths) of the live documents, read from the segments."""

    def __init__(
        self, root: Path, segments: Sequence[SegmentInfo], live: npt.NDArray[np.bool_], docs_per_chunk: int = 50_000
    ):
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


def chunks(items: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
