"""Dynamic batching: merge the pairs of concurrent requests into shared model calls, off the event loop.

One worker thread owns the model. Requests are queued as jobs; the worker takes the oldest, waits
at most ``max_wait_ms`` (counted from that job's arrival) for more, merges every compatible queued
job up to ``max_batch_pairs`` pairs, scores them in one call (which the engine cuts into
token-budget batches of length-sorted pairs), and hands each job its slice. The queue is bounded:
a job beyond ``queue_size`` is refused at once. Every accepted job's future is resolved exactly
once: with a result, an error, or cancelled by its request's timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError, CrossrankError, InputError
from crossrank.rerank.config import Activation
from crossrank.retrieve.pipeline import SearchResult
from crossrank.serve.config import ServeConfig
from crossrank.serve.errors import QueueFullError, ShuttingDownError
from crossrank.serve.metrics import Metrics
from crossrank.serve.model import ServedModel

__all__ = ["Batcher", "PairsResult", "PairsWork", "SearchWork", "Timing"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PairsWork:
    """Pairs to score for one request.

    Attributes:
        queries: the query of each pair.
        documents: the document of each pair.
        activations: the activations whose scores the request needs.
        max_doc_tokens: cut each document to this many tokens first (Cohere's ``max_tokens_per_doc``).
    """

    queries: list[str]
    documents: list[str]
    activations: tuple[Activation, ...]
    max_doc_tokens: int | None = None

    @property
    def size(self) -> int:
        """Return the pairs this work costs."""
        return len(self.queries)

    @property
    def key(self) -> Hashable:
        """Return what must be equal for two works to share a model call."""
        return ("pairs",)


@dataclass(frozen=True, slots=True)
class SearchWork:
    """One query to run through the pipeline (first stage, then rerank the top ``depth``)."""

    query: str
    k: int
    depth: int
    retriever: str | None
    rerank: bool

    @property
    def size(self) -> int:
        """Return the pairs this work costs."""
        return max(self.depth, self.k) if self.rerank else 1

    @property
    def key(self) -> Hashable:
        """Return what must be equal for two searches to run as one batch."""
        return ("search", self.k, self.depth, self.retriever, self.rerank)


@dataclass(frozen=True, slots=True)
class Timing:
    """How a job went through the batcher.

    Attributes:
        queue_ms: from submission until the worker took it up.
        inference_ms: the model call it shared.
        batch_pairs: pairs in that call.
        batch_requests: requests in that call.
        tokenize_ms: between the two: tokenizing before the model call (checking each query's
            length, cutting documents to ``max_doc_tokens``), for every request in that call.
    """

    queue_ms: float
    inference_ms: float
    batch_pairs: int
    batch_requests: int
    tokenize_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PairsResult:
    """Scores of one request's pairs.

    Attributes:
        scores: per activation asked for, float32 ``(n,)`` or ``(n, num_labels)``, input order.
        truncated: bool ``(n,)``: the document was cut (to ``max_length`` or ``max_doc_tokens``).
        num_tokens: int32 ``(n,)``: tokens the model read per pair.
        timing: how the job went through the batcher.
    """

    scores: dict[str, npt.NDArray[np.float32]]
    truncated: npt.NDArray[np.bool_]
    num_tokens: npt.NDArray[np.int32]
    timing: Timing


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """The result of one search job."""

    result: SearchResult
    timing: Timing


@dataclass(eq=False, slots=True)
class _Job:
    work: PairsWork | SearchWork
    future: Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merge concurrent requests into shared model calls on one worker thread.

    Args:
        model: the served model; only the worker thread calls it.
        config: queue size, wait, merge limit and whether to merge at all.
        metrics: where queue depth, batch sizes, tokens and truncations are counted.
    """

    def __init__(self, model: ServedModel, config: ServeConfig, metrics: Metrics) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._pending = 0  # accepted and not finished: queued or in the running batch
        self._pending_pairs = 0
        self._closing = False
        self._rate = 0.0  # pairs per second, smoothed, for Retry-After
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ event-loop side

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="crossrank-batcher", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Return whether the worker runs and new work is accepted."""
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def depth(self) -> int:
        """Return how many accepted requests wait or run."""
        return self._pending

    def submit(self, work: PairsWork | SearchWork) -> Future[Any]:
        """Queue ``work`` and return the future of its result.

        Raises:
            QueueFullError: ``queue_size`` requests are already waiting or running.
            ShuttingDownError: the server is draining, or the worker is not running.
        """
        future: Future[Any] = Future()
        with self._cond:
            self._admit(work)
            self._queue.append(_Job(work, future))
            self._cond.notify()
        return future

    def _admit(self, work: PairsWork | SearchWork) -> None:
        """Count ``work`` as accepted, or refuse it (the admission rules every batcher shares).

        Raises:
            QueueFullError: ``queue_size`` requests are already waiting or running.
            ShuttingDownError: the batcher is draining, or not running.
        """
        if not self.running:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ShuttingDownError("the server is shutting down or not ready; retry on another instance")
        if self._pending >= self.config.queue_size:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFullError(
                f"the queue is full ({self._pending} requests waiting or running); retry later",
                retry_after=self._retry_after(),
            )
        self._pending += 1
        self._pending_pairs += work.size
        self.metrics.queue_depth.set(self._pending)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish every queued job, and stop the worker (the graceful drain)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # only if the worker did not finish in time
            while self._queue:
                job = self._queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ShuttingDownError("the server stopped before this request ran"))
                self._finish(job)

    def _retry_after(self) -> int:
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._pending_pairs / self._rate))))

    # ------------------------------------------------------------ worker side

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if batch:
                try:
                    self._execute(batch)
                except BaseException as err:  # never leave a future unresolved
                    # a request's own bad input is answered with 400 and logged with it, never as a failure
                    level = logging.DEBUG if isinstance(err, InputError | ConfigError) else logging.ERROR
                    log.log(level, "batch of %d requests failed: %s", len(batch), type(err).__name__)
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(err)
                finally:
                    with self._cond:
                        for job in batch:
                            self._finish(job)

    def _finish(self, job: _Job) -> None:
        # called with the lock held
        self._pending -= 1
        self._pending_pairs -= job.work.size
        self.metrics.queue_depth.set(self._pending)

    def _collect(self) -> list[_Job] | None:
        """Return the next jobs to run together; ``None`` when closed and drained."""
        cfg = self.config
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            if not first.future.set_running_or_notify_cancel():  # its request timed out or left
                self._finish(first)
                return []
            batch = [first]
            if not cfg.batching:
                return batch
            size = first.work.size
            key = first.work.key
            deadline = first.enqueued + cfg.max_wait_ms / 1000
            while size < cfg.max_batch_pairs:
                taken = self._take_compatible(key, cfg.max_batch_pairs - size)
                for job in taken:
                    batch.append(job)
                    size += job.work.size
                if size >= cfg.max_batch_pairs or self._closing:
                    break
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            return batch

    def _take_compatible(self, key: Hashable, room: int) -> list[_Job]:
        # called with the lock held; keeps the order of the jobs it leaves
        taken: list[_Job] = []
        kept: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.work.key == key and job.work.size <= room:
                if job.future.set_running_or_notify_cancel():
                    taken.append(job)
                    room -= job.work.size
                else:
                    self._finish(job)
            else:
                kept.append(job)
        self._queue = kept
        return taken

    def _execute(self, batch: list[_Job]) -> None:
        if isinstance(batch[0].work, SearchWork):
            self._run_search(batch)
        else:
            self._run_pairs(batch)

    def _observe(self, batch: list[_Job], pairs: int, started: float, seconds: float) -> list[float]:
        m = self.metrics
        m.inference.observe(seconds)
        m.batch_pairs.observe(pairs)
        m.batch_requests.observe(len(batch))
        m.pairs.inc(pairs)
        if seconds > 0 and pairs:
            rate = pairs / seconds
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        waits = []
        for job in batch:
            wait = max(0.0, started - job.enqueued)
            m.queue_wait.observe(wait)
            waits.append(wait * 1000)
        return waits

    def _run_pairs(self, batch: list[_Job]) -> None:
        model = self.model
        taken = time.perf_counter()  # queue time ends here; checking queries and cutting documents is not waiting
        ready: list[tuple[_Job, list[str], list[str], npt.NDArray[np.bool_]]] = []
        for job in batch:
            work = job.work
            assert isinstance(work, PairsWork)
            try:
                for query in dict.fromkeys(work.queries):
                    model.check_query(query)
                docs = work.documents
                cut = np.zeros(len(docs), dtype=np.bool_)
                if work.max_doc_tokens is not None:
                    docs = list(docs)
                    for i, doc in enumerate(docs):
                        docs[i], cut[i] = model.cut(doc, work.max_doc_tokens)
            except CrossrankError as err:
                job.future.set_exception(err)
                continue
            ready.append((job, work.queries, docs, cut))
        if not ready:
            return
        prepared = (taken, (time.perf_counter() - taken) * 1000)
        try:
            self._score_together(ready, prepared)
        except CrossrankError:
            if len(ready) == 1:
                raise
            for item in ready:  # find the request at fault; the others still get their scores
                try:
                    self._score_together([item], prepared)
                except CrossrankError as err:
                    item[0].future.set_exception(err)

    def _score_together(
        self, items: list[tuple[_Job, list[str], list[str], npt.NDArray[np.bool_]]], prepared: tuple[float, float]
    ) -> None:
        taken, tokenize_ms = prepared
        acts: list[Activation] = []
        queries: list[str] = []
        docs: list[str] = []
        for job, qs, ds, _ in items:
            assert isinstance(job.work, PairsWork)
            acts.extend(a for a in job.work.activations if a not in acts)
            queries.extend(qs)
            docs.extend(ds)
        started = time.perf_counter()
        scored = self.model.score(queries, docs, acts)
        seconds = time.perf_counter() - started
        jobs = [item[0] for item in items]
        waits = self._observe(jobs, len(queries), taken, seconds)
        truncated = scored[0].truncated
        tokens = scored[0].num_tokens
        start = 0
        n_cut = 0
        for (job, qs, _, cut), wait in zip(items, waits, strict=True):
            assert isinstance(job.work, PairsWork)
            stop = start + len(qs)
            trunc = truncated[start:stop] | cut
            n_cut += int(trunc.sum())
            result = PairsResult(
                scores={a: scored[acts.index(a)].scores[start:stop] for a in job.work.activations},
                truncated=trunc,
                num_tokens=tokens[start:stop],
                timing=Timing(wait, seconds * 1000, len(queries), len(items), tokenize_ms),
            )
            if not job.future.done():
                job.future.set_result(result)
            start = stop
        self.metrics.tokens.inc(int(tokens.sum()))
        self.metrics.truncated.inc(n_cut)

    def _run_search(self, batch: list[_Job]) -> None:
        first = batch[0].work
        assert isinstance(first, SearchWork)
        queries = [job.work.query for job in batch if isinstance(job.work, SearchWork)]
        started = time.perf_counter()
        try:
            results = self.model.search(
                queries, k=first.k, depth=first.depth, retriever=first.retriever, rerank=first.rerank
            )
        except CrossrankError:
            if len(batch) == 1:
                raise
            for job in batch:  # isolate the query at fault
                try:
                    self._run_search([job])
                except CrossrankError as err:
                    job.future.set_exception(err)
            return
        seconds = time.perf_counter() - started
        pairs = sum(r.depth for r in results)
        waits = self._observe(batch, pairs, started, seconds)
        self.metrics.truncated.inc(sum(h.truncated for r in results for h in r.hits))
        for job, result, wait in zip(batch, results, waits, strict=True):
            if not job.future.done():
                job.future.set_result(SearchOutcome(result, Timing(wait, seconds * 1000, pairs, len(batch))))
