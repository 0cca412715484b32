"""The served index follows its writes: a search never answers from a generation a write replaced.

Each search first looks at the index's ``CURRENT`` file (one ``stat``: every write replaces the
file, so its inode changes). When a write has committed a new generation since the last search,
the index is opened on it, checked as every open is, and swapped in before the search runs;
searches already running finish on the generation they started with, and the index object this
server opened for a replaced generation is closed when the last of them ends. When the new
generation cannot be opened, the search fails (the caller answers 503) rather than answer from the
replaced one: documents a write deleted are never returned after it committed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from crossrank.pipeline import Pipeline
from crossrank.retrieve.index import Index
from crossrank.retrieve.index_files import read_current

__all__ = ["FollowedPipeline"]

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int, int]


class FollowedPipeline:
    """A pipeline whose index is reopened on the newest generation when a write commits one.

    A pipeline over another kind of first stage is served as it is.

    Args:
        pipeline: the pipeline to serve; its index is never closed here (its owner closes it).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._current = pipeline
        self._stamp: _Stamp | None = None  # CURRENT's identity when self._current was last known current
        self._lock = threading.Lock()  # guards _current, _stamp and _uses
        self._reopening = threading.Lock()  # one reopen at a time
        self._uses: dict[int, int] = {}  # id(pipeline) -> searches running on it
        self._owned: set[int] = set()  # pipelines whose index this object opened, and so closes

    @property
    def current(self) -> Pipeline:
        """Return the pipeline the last search used (no check for a newer generation)."""
        return self._current

    @contextmanager
    def use(self) -> Iterator[Pipeline]:
        """Yield the pipeline on the index's current generation, reopening it first if a write replaced it.

        Raises:
            IndexDamagedError: the current generation is damaged.
            IndexError_: it could not be opened (e.g. a write replaced it again on each attempt, or
                it was rebuilt with another dense model).
        """
        self._refresh()
        with self._lock:
            pipeline = self._current
            self._uses[id(pipeline)] = self._uses.get(id(pipeline), 0) + 1
        try:
            yield pipeline
        finally:
            self._release(pipeline)

    def _release(self, pipeline: Pipeline) -> None:
        """Count a search on ``pipeline`` done; close its index if it was replaced and this was the last."""
        with self._lock:
            left = self._uses[id(pipeline)] - 1
            if left:
                self._uses[id(pipeline)] = left
                return
            del self._uses[id(pipeline)]
            close = pipeline is not self._current and id(pipeline) in self._owned
            if close:
                self._owned.discard(id(pipeline))
        if close and pipeline.index is not None:
            pipeline.index.close()

    def _refresh(self) -> None:
        if self._current.index is None:  # a first stage other than an index: no folder to follow
            return
        folder = self._current.index.folder
        stamp = _stamp(folder)
        if stamp is not None and stamp == self._stamp:
            return
        with self._reopening:
            if stamp is not None and stamp == self._stamp:
                return  # another thread reopened it meanwhile
            old = self._current
            assert old.index is not None
            if read_current(folder) == old.index.generation:  # read after the stat: a later write changes both
                self._stamp = stamp
                return
            index = Index.open(folder, dense_model=old.index.encoder, threads=old.index.threads)
            fresh = Pipeline(index, reranker=old.reranker, rerank_weight=old.rerank_weight, blend=old.blend)
            log.info("serving index %s at %s (was %s)", folder, index.generation, old.index.generation)
            with self._lock:
                self._current = fresh
                self._owned.add(id(fresh))
                self._stamp = stamp  # from before the open: a write since then is seen by the next search
                close = id(old) not in self._uses and id(old) in self._owned
                if close:
                    self._owned.discard(id(old))
            if close:
                old.index.close()


def _stamp(folder: os.PathLike[str] | str) -> _Stamp | None:
    """Return what identifies ``CURRENT``'s present version (a write replaces the file: a new inode)."""
    try:
        st = os.stat(os.path.join(folder, "CURRENT"))
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
