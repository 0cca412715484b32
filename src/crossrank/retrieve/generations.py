"""The crash-safe on-disk format: generations, ``CURRENT``, the write lock and garbage collection.

Layout::

    DIR/CURRENT              name of the live generation, replaced atomically
    DIR/gen-000003/          one generation: manifest.json, live.npy, vocab.json, bm25/, bm25_rows.npy
    DIR/segments/seg-000002/ immutable documents (see :mod:`crossrank.retrieve.segments`)

Every write builds new files under a temporary name, fsyncs them, renames them into place, and
only then points ``CURRENT`` at the new generation (``os.replace``). A write killed at any point
leaves ``CURRENT`` on the previous complete generation; the debris is removed by the next write
(:func:`collect_garbage`). Writers hold :class:`WriteLock`; readers take no lock (see
:mod:`crossrank.retrieve.index_files`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from crossrank.errors import IndexStateError
from crossrank.retrieve.bm25 import BM25Settings, BM25Tokenizer, build_bm25
from crossrank.retrieve.durable import atomic_write, fsync_dir, fsync_tree, next_number, remove
from crossrank.retrieve.index_files import IndexDamagedError, check_live
from crossrank.retrieve.manifest import Counts, Manifest, SegmentInfo
from crossrank.retrieve.progress import progress_bar
from crossrank.retrieve.segments import LiveTokenChunks

__all__ = ["WriteLock", "collect_garbage", "commit_generation", "leftovers", "now", "versions"]

T = TypeVar("T")


def commit_generation(
    root: Path,
    manifest: Manifest,
    segments: Sequence[SegmentInfo],
    live: npt.NDArray[np.bool_],
    tokenizer: BM25Tokenizer | None,
    *,
    check: Callable[[str], T],
    on_checked_fail: Callable[[T], None],
    progress: bool,
) -> T:
    """Write a new generation for ``segments`` and ``live``, check it as an open does, then make it current.

    ``CURRENT`` moves (atomically) only once ``check`` (given the new generation's name; it opens
    it as a reader would) has returned; the old generations are removed after that.

    Returns:
        what ``check`` returned for the new generation.

    Raises:
        IndexDamagedError: the new generation would be, or is, inconsistent; nothing changed.
    """
    n = next_number(root, "gen-")
    name = f"gen-{n:06d}"
    check_live(root, f"{name}/live.npy", live, sum(s.count for s in segments))
    if [s.start for s in segments] != [sum(s.count for s in segments[:i]) for i in range(len(segments))]:
        raise IndexDamagedError(root, f"{name}/manifest.json", "would list segments that do not follow each other")
    tmp = root / f".tmp-gen-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        np.save(tmp / "live.npy", live)
        if tokenizer is not None and manifest.bm25 is not None:
            tokenizer.save(tmp / "vocab.json")
            settings = BM25Settings.from_dict(dict(manifest.bm25))
            chunks = LiveTokenChunks(root, segments, live)
            with progress_bar(progress, "BM25") as p:
                n_live = int(live.sum())
                task = p.add_task("building the BM25 matrix", total=n_live) if p is not None else None
                build_bm25(chunks, num_terms=max(tokenizer.vocab_size, 1), settings=settings, folder=tmp / "bm25")
                if p is not None and task is not None:
                    p.update(task, completed=n_live)
            np.save(tmp / "bm25_rows.npy", np.flatnonzero(live).astype(np.int64))
        written = replace(
            manifest,
            generation=name,
            segments=tuple(segments),
            updated=now(),
            counts=Counts(
                documents=int(live.sum()),
                slots=int(live.size),
                deleted=int((~live).sum()),
                segments=len(segments),
                bm25_terms=tokenizer.vocab_size if tokenizer is not None else 0,
            ),
            versions=versions(),
        )
        (tmp / "manifest.json").write_text(
            json.dumps(written.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
        )
        fsync_tree(tmp)
        os.replace(tmp, root / name)
        fsync_dir(root)
        # the checks an open runs, on what was written: CURRENT never moves to a generation that fails them
        checked = check(name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root / name, ignore_errors=True)
        raise
    try:
        atomic_write(root / "CURRENT", name + "\n")
    except BaseException:
        on_checked_fail(checked)
        raise
    collect_garbage(root, name, {s.name for s in segments})
    return checked


def collect_garbage(root: Path, current: str, segments: set[str]) -> None:
    """Remove old generations, unreferenced segments and whatever a killed write left (folders or files)."""
    for rel in list(leftovers(root, current, segments)):
        remove(root / rel)


def leftovers(root: Path, current: str, segments: set[str]) -> Iterator[str]:
    """Yield what :func:`collect_garbage` would remove, relative to ``root``."""
    for p in root.iterdir():
        if (p.name.startswith("gen-") and p.name != current) or p.name.startswith(".tmp-"):
            yield p.name
    seg_root = root / "segments"
    if seg_root.is_dir():
        for p in seg_root.iterdir():
            if p.name not in segments:
                yield f"segments/{p.name}"


class WriteLock:
    """An exclusive lock on the index folder for the length of one write (``fcntl.flock``)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.fh: Any = None

    def __enter__(self) -> WriteLock:
        self.fh = self.path.open("a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self.fh.close()
            raise IndexStateError(
                f"another process is writing the index at {self.path.parent}; wait for it to finish"
            ) from err
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("crossrank", "bm25s", "usearch", "onnxruntime", "tokenizers", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
