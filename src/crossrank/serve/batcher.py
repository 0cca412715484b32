"""Dynamic batching: merge the pairs of concurrent requests into shared model calls, off the event loop.

One worker thread owns the model. Requests are queued as jobs, each with a deadline (its arrival
plus ``timeout_s``); the worker takes the oldest, waits at most ``max_wait_ms`` (counted from that
job's arrival) for more, merges compatible queued jobs, scores them in one call (which the engine
cuts into token-budget batches of length-sorted pairs), and hands each job its slice.

Overload is handled in three places:

- admission (:mod:`crossrank.serve.admission`): a job is accepted only if the work queued ahead of
  it and its own can end before its deadline at the rate the worker measures; otherwise it is
  refused at once with a ``Retry-After`` from the queue, and so is a job beyond ``queue_size``;
- the size of each model call: no more work than can end before the earliest deadline in it, at
  most a quarter of the timeout, and at most ``max_batch_pairs`` pairs; a larger job is cut into
  several calls, one after another;
- release: a job's place is given back the moment its future is resolved, whether with a result,
  an error, or cancelled because its request timed out or its client left. A cancelled job, or one
  whose deadline has passed, is never run, nor is the rest of a job cut into several calls.

Every accepted job's future is resolved exactly once.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError, CrossrankError, InputError
from crossrank.pipeline import SearchResult
from crossrank.rerank.config import Activation
from crossrank.serve.admission import Admission
from crossrank.serve.config import ServeConfig
from crossrank.serve.errors import QueueFullError, ShuttingDownError
from crossrank.serve.metrics import Metrics
from crossrank.serve.model import ServedModel

__all__ = ["Batcher", "Job", "PairsResult", "PairsWork", "SearchWork", "Timing"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PairsWork:
    """Pairs to score for one request.

    Attributes:
        queries: the query of each pair.
        documents: the document of each pair.
        activations: the activations whose scores the request needs.
        max_doc_tokens: cut each document to this many tokens first (Cohere's ``max_tokens_per_doc``).
        instruction: a decoder reranker's task instruction for these pairs (``None``: the model's own).
    """

    queries: list[str]
    documents: list[str]
    activations: tuple[Activation, ...]
    max_doc_tokens: int | None = None
    instruction: str | None = None

    @property
    def size(self) -> int:
        """Return the pairs this work costs."""
        return len(self.queries)

    @property
    def key(self) -> Hashable:
        """Return what must be equal for two works to share a model call (pairs of one instruction)."""
        return ("pairs", self.instruction)


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
        inference_ms: the model call it shared; summed over its calls when it was cut into several.
        batch_pairs: pairs in that call; summed likewise.
        batch_requests: requests in that call; the most in any of its calls.
        tokenize_ms: checking its queries' lengths and cutting its documents to ``max_doc_tokens``,
            between being taken up and its first model call.
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


#: a model call lasts at most this share of the timeout, so the rest of a request whose client
#: has gone is dropped that soon
_CALL_SHARE = 0.25
#: the rate's memory, in seconds of model calls: a call of this length moves it 63% of the way
_RATE_MEMORY_S = 5.0
#: before the first model call, the rate is this share of the speed measured at load
_PRIOR_SHARE = 0.8
#: the rate when no speed was measured at load: 10 pairs/s of about 100 tokens
_FALLBACK_RATE = 1000.0
#: estimated tokens per candidate of a search (its documents are not known before it runs)
_SEARCH_PAIR_TOKENS = 128.0


@dataclass(eq=False, slots=True)
class Job:
    """One admitted request inside a batcher: its work, the future its route awaits, and its deadline.

    Batchers (the worker thread here, the Ray Serve one in :mod:`crossrank.scale.serving`) track
    how much of the work they have handed to model calls and collect the pieces that come back.
    """

    work: PairsWork | SearchWork
    future: Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float = math.inf
    #: pairs work: cumulative estimated cost per pair; ``None`` when costs are not tracked
    cum: npt.NDArray[np.float64] | None = None
    cost: float = 0.0  # estimated cost of the whole job
    unstarted: float = 0.0  # the part of ``cost`` not yet handed to a model call
    handed: int = 0  # pairs handed to model calls so far
    released: bool = False
    docs: list[str] | None = None  # the documents as scored (cut to max_doc_tokens), once checked
    cut: npt.NDArray[np.bool_] | None = None
    pieces: list[tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.bool_], npt.NDArray[np.int32]]] = field(
        default_factory=list
    )
    taken: float | None = None  # when the worker took it up (queue time ends here)
    tokenize_s: float = 0.0  # checking its queries and cutting its documents
    started: float | None = None  # start of its first model call
    inference_s: float = 0.0
    call_pairs: int = 0
    call_requests: int = 0

    def part_cost(self, start: int, stop: int) -> float:
        """Return the estimated cost of pairs ``start:stop`` (the whole job's for a search)."""
        if self.cum is None:
            return self.cost
        return float(self.cum[stop - 1] - (self.cum[start - 1] if start else 0.0))

    @property
    def units(self) -> int:
        """Return how many parts a call can take of this job: its pairs, or 1 for a search."""
        return self.work.size if isinstance(self.work, PairsWork) else 1


_Segment = tuple[Job, int, int]  # a job and the part of it (pairs start:stop) one model call scores


class Batcher:
    """Merge concurrent requests into shared model calls on one worker thread.

    Args:
        model: the served model; only the worker thread calls it.
        config: queue size, wait, merge limit, timeout and whether to merge at all.
        metrics: where queue depth, admissions, batch sizes, tokens and truncations are counted.
    """

    def __init__(self, model: ServedModel, config: ServeConfig, metrics: Metrics) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._pending = 0  # accepted and not answered: queued or in the running call
        self._pending_pairs = 0
        self._closing = False
        self._rate = 0.0  # pairs per second, smoothed (Retry-After of subclasses that queue elsewhere)
        measured = getattr(model, "work_per_s", None)
        #: estimated cost (see ServedModel.pair_costs) the model gets through per second, smoothed
        self.work_rate = _PRIOR_SHARE * measured if measured else _FALLBACK_RATE
        self._rate_measured = False
        self._queued_cost = 0.0  # cost of accepted work not yet handed to a model call
        self._call_cost = 0.0  # cost of the running model call
        self._call_started = 0.0
        self._admission = Admission(config.timeout_s)
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

    def backlog_seconds(self) -> float:
        """Return the seconds of accepted work ahead of a new request, at the measured rate."""
        with self._cond:
            return self._ahead(time.perf_counter()) / self.work_rate

    def submit(self, work: PairsWork | SearchWork) -> Future[Any]:
        """Queue ``work`` if it can finish in time and return the future of its result.

        Its deadline is now plus ``timeout_s``. Cancelling the future (as the server does when the
        request times out or its client leaves) frees its place at once, and its work, or what is
        left of it, is not run.

        Raises:
            QueueFullError: refused (429): ``queue_size`` requests are already waiting or running,
                or it could not finish before its deadline behind the work ahead; ``retry_after``
                says when to send it again.
            ShuttingDownError: the server is draining, or the worker is not running.
        """
        now = time.perf_counter()
        job = Job(work, Future(), enqueued=now, deadline=now + self.config.timeout_s)
        if isinstance(work, PairsWork):
            job.cum = np.cumsum(self.model.pair_costs(work.queries, work.documents, work.max_doc_tokens))
            job.cost = float(job.cum[-1]) if len(job.cum) else 0.0
        else:
            job.cost = work.size * min(_SEARCH_PAIR_TOKENS, self.model.max_length) if work.rerank else 1.0
        job.unstarted = job.cost
        key = _digest(work)
        with self._cond:
            if not self.running:
                self.metrics.rejected.labels("shutting_down").inc()
                raise ShuttingDownError("the server is shutting down or not ready; retry on another instance")
            decision = self._admission.decide(
                key,
                job.cost,
                ahead=self._ahead(now),
                rate=self.work_rate,
                now=now,
                room=self._pending < self.config.queue_size,
            )
            if not decision.admitted:
                assert decision.reason is not None and decision.retry_after is not None
                self.metrics.rejected.labels(decision.reason).inc()
                if decision.reason == "queue_full":
                    message = f"the queue is full ({self._pending} requests waiting or running)"
                else:
                    message = (
                        f"the server is at capacity: after the {decision.wait_s:.1f} s of work ahead, this request "
                        f"would not be answered within {self.config.timeout_s:g} s"
                    )
                raise QueueFullError(
                    f"{message}; retry after {decision.retry_after} s", retry_after=decision.retry_after
                )
            self._pending += 1
            self._pending_pairs += work.size
            self._queued_cost += job.cost
            self.metrics.queue_depth.set(self._pending)
            self.metrics.admitted.inc()
            job.future.add_done_callback(lambda _: self._release(job))
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def _admit(self, work: PairsWork | SearchWork) -> None:
        """Count ``work`` as accepted, or refuse it, for a subclass that queues work elsewhere.

        Such a batcher knows no deadlines: only the queue's size limit applies, and ``Retry-After``
        is the pairs waiting or running at the measured pairs per second.

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
        self.metrics.admitted.inc()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish every queued job, and stop the worker (the graceful drain)."""
        with self._cond:
            self._closing = True
            self._admission.forget()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # only if the worker did not finish in time
            left = list(self._queue)
            self._queue.clear()
        for job in left:
            _resolve(job.future, error=ShuttingDownError("the server stopped before this request ran"))

    def _retry_after(self) -> int:
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._pending_pairs / self._rate))))

    def _ahead(self, now: float) -> float:
        # called with the lock held: the cost queued, and what the running call has left, at the rate
        running = max(0.0, self._call_cost - self.work_rate * (now - self._call_started))
        return self._queued_cost + running

    def _release(self, job: Job) -> None:
        """Give back ``job``'s place: its future was resolved (result, error, timeout or cancelled)."""
        with self._cond:
            if job.released:
                return
            job.released = True
            self._pending -= 1
            self._pending_pairs -= job.work.size
            self._queued_cost = max(0.0, self._queued_cost - job.unstarted)
            job.unstarted = 0.0
            self.metrics.queue_depth.set(self._pending)
            future = job.future
            if future.cancelled() or isinstance(future.exception(), TimeoutError):
                # a cancelled future at its deadline is the request's timeout; before it, a client gone
                expired = not future.cancelled() or time.perf_counter() >= job.deadline - 0.001
                (self.metrics.expired if expired else self.metrics.dropped).inc()
                if isinstance(job.work, PairsWork):
                    never_run = job.units - job.handed
                else:
                    never_run = 0 if job.handed else job.work.size
                self.metrics.dropped_pairs.inc(max(0, never_run))

    # ------------------------------------------------------------ worker side

    def _run(self) -> None:
        while True:
            call = self._collect()
            if call is None:
                return
            try:
                self._run_segments(call)
            except BaseException as err:  # never leave a future unresolved
                # a request's own bad input is answered with 400 and logged with it, never as a failure
                level = logging.DEBUG if isinstance(err, InputError | ConfigError) else logging.ERROR
                log.log(level, "a model call for %d requests failed: %s", len(call), type(err).__name__)
                for job, _, _ in call:
                    _resolve(job.future, error=err)
            finally:
                with self._cond:
                    self._call_cost = 0.0

    def _collect(self) -> list[_Segment] | None:
        """Return the parts of jobs to score in the next model call; ``None`` when closed and drained."""
        cfg = self.config
        late: list[Job] = []
        try:
            with self._cond:
                while True:
                    first = self._front(late)
                    if first is None:
                        if self._closing:
                            return None
                        self._cond.wait()
                        continue
                    if cfg.batching and first.handed == 0 and not self._closing:
                        left = first.enqueued + cfg.max_wait_ms / 1000 - time.perf_counter()
                        if left > 0 and not self._plan(first)[1]:
                            self._cond.wait(left)
                            continue  # look again: the first job may have gone meanwhile
                    call, _ = self._plan(first)
                    self._hand_out(call)
                    return call
        finally:
            for job in late:  # past its deadline before it ran: never run (its request gets 504)
                _resolve(job.future, error=TimeoutError("the request's deadline passed before it ran"))

    def _front(self, late: list[Job]) -> Job | None:
        # called with the lock held: drop released and late jobs from the front; return the first live one
        now = time.perf_counter()
        while self._queue:
            job = self._queue[0]
            if job.released:
                self._queue.popleft()
            elif now >= job.deadline:
                self._queue.popleft()
                late.append(job)
            else:
                return job
        return None

    def _plan(self, first: Job) -> tuple[list[_Segment], bool]:
        """Return the next call, starting with ``first``, and whether it is full (called with the lock held).

        The call holds no more estimated work than the model gets through before ``first``'s
        deadline (the earliest: jobs queue in deadline order) and within a quarter of the timeout,
        and no more than ``max_batch_pairs`` pairs; ``first`` gets at least one pair in it.
        """
        cfg = self.config
        now = time.perf_counter()
        budget = self.work_rate * max(0.0, min(first.deadline - now, _CALL_SHARE * cfg.timeout_s))
        if isinstance(first.work, PairsWork) and first.cum is not None:
            start = first.handed
            base = float(first.cum[start - 1]) if start else 0.0
            fit = int(np.searchsorted(first.cum, base + budget, side="right")) - start
            stop = start + max(1, min(fit, first.units - start, cfg.max_batch_pairs))
            call = [(first, start, stop)]
            pairs, cost = stop - start, first.part_cost(start, stop)
            if stop < first.units:
                return call, True
        else:
            call = [(first, 0, first.units)]
            pairs, cost = first.work.size, first.cost
        if not cfg.batching:
            return call, True
        for job in itertools.islice(self._queue, 1, None):
            if pairs >= cfg.max_batch_pairs:
                break
            if job.released or job.handed or job.work.key != first.work.key:
                continue
            if pairs + job.work.size <= cfg.max_batch_pairs and cost + job.cost <= budget:
                call.append((job, 0, job.units))
                pairs += job.work.size
                cost += job.cost
        return call, pairs >= cfg.max_batch_pairs or cost >= budget

    def _hand_out(self, call: list[_Segment]) -> None:
        # called with the lock held: the call's work leaves the queue's cost, and whole jobs the queue
        total = 0.0
        for job, start, stop in call:
            part = job.part_cost(start, stop) if job.cum is not None else job.cost
            job.unstarted = max(0.0, job.unstarted - part)
            self._queued_cost = max(0.0, self._queued_cost - part)
            job.handed = stop
            total += part
        finished = {id(job) for job, _, stop in call if stop >= job.units}
        if finished:
            self._queue = deque(j for j in self._queue if id(j) not in finished)
        self._call_cost = total
        self._call_started = time.perf_counter()

    def _run_segments(self, call: list[_Segment]) -> None:
        if isinstance(call[0][0].work, SearchWork):
            self._run_search([job for job, _, _ in call])
        else:
            self._run_pairs(call)

    def _execute(self, batch: list[Job]) -> None:
        """Run whole jobs in one model call (for subclasses that merge requests themselves)."""
        self._run_segments([(job, 0, job.units) for job in batch])

    def _observe(self, jobs: list[Job], pairs: int, cost: float, started: float, seconds: float) -> None:
        m = self.metrics
        m.inference.observe(seconds)
        m.batch_pairs.observe(pairs)
        m.batch_requests.observe(len(jobs))
        m.pairs.inc(pairs)
        if seconds > 0 and pairs:
            rate = pairs / seconds
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        if seconds > 0 and cost > 0:
            sample = cost / seconds
            # the first measured call replaces the prior; later ones move the rate by their length
            weight = 1.0 if not self._rate_measured else 1.0 - math.exp(-seconds / _RATE_MEMORY_S)
            self.work_rate += weight * (sample - self.work_rate)
            self._rate_measured = True
        for job in jobs:
            if job.started is None:
                job.started = started
                m.queue_wait.observe(max(0.0, (job.taken or started) - job.enqueued))
            job.inference_s += seconds
            job.call_pairs += pairs
            job.call_requests = max(job.call_requests, len(jobs))

    def _run_pairs(self, call: list[_Segment]) -> None:
        model = self.model
        ready: list[_Segment] = []
        for job, start, stop in call:
            work = job.work
            assert isinstance(work, PairsWork)
            if job.docs is None:
                job.taken = time.perf_counter()
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
                    _resolve(job.future, error=err)
                    continue
                job.docs, job.cut = docs, cut
                job.tokenize_s = time.perf_counter() - job.taken
            ready.append((job, start, stop))
        if not ready:
            return
        try:
            self._score_together(ready)
        except CrossrankError:
            if len(ready) == 1:
                raise
            for item in ready:  # find the request at fault; the others still get their scores
                try:
                    self._score_together([item])
                except CrossrankError as err:
                    _resolve(item[0].future, error=err)

    def _score_together(self, items: list[_Segment]) -> None:
        acts: list[Activation] = []
        queries: list[str] = []
        docs: list[str] = []
        cost = 0.0
        for job, start, stop in items:
            assert isinstance(job.work, PairsWork) and job.docs is not None
            acts.extend(a for a in job.work.activations if a not in acts)
            queries.extend(job.work.queries[start:stop])
            docs.extend(job.docs[start:stop])
            cost += job.part_cost(start, stop) if job.cum is not None else 0.0
        started = time.perf_counter()
        first = items[0][0].work
        assert isinstance(first, PairsWork)
        instruction = first.instruction  # a batch holds works of one key, so of one instruction
        scored = self.model.score(queries, docs, acts, instruction=instruction)
        seconds = time.perf_counter() - started
        jobs = [item[0] for item in items]
        self._observe(jobs, len(queries), cost, started, seconds)
        truncated = scored[0].truncated
        tokens = scored[0].num_tokens
        offset = 0
        n_cut = 0
        for job, start, stop in items:
            assert isinstance(job.work, PairsWork) and job.cut is not None
            end = offset + stop - start
            trunc = truncated[offset:end] | job.cut[start:stop]
            n_cut += int(trunc.sum())
            scores: dict[str, npt.NDArray[np.float32]] = {
                a: scored[acts.index(a)].scores[offset:end] for a in job.work.activations
            }
            job.pieces.append((scores, trunc, tokens[offset:end]))
            offset = end
            if stop >= job.units:
                _resolve(job.future, result=_assemble(job))
        self.metrics.tokens.inc(int(tokens.sum()))
        self.metrics.truncated.inc(n_cut)

    def _run_search(self, batch: list[Job]) -> None:
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
                    _resolve(job.future, error=err)
            return
        seconds = time.perf_counter() - started
        pairs = sum(r.depth for r in results)
        self._observe(batch, pairs, sum(job.cost for job in batch), started, seconds)
        self.metrics.truncated.inc(sum(h.truncated for r in results for h in r.hits))
        for job, result in zip(batch, results, strict=True):
            _resolve(job.future, result=SearchOutcome(result, _timing(job)))


def _timing(job: Job) -> Timing:
    taken = job.taken or job.started or job.enqueued
    return Timing(
        max(0.0, taken - job.enqueued) * 1000,
        job.inference_s * 1000,
        job.call_pairs,
        job.call_requests,
        job.tokenize_s * 1000,
    )


def _assemble(job: Job) -> PairsResult:
    """Return a pairs job's result from the parts its model calls scored, in order."""
    pieces = job.pieces
    if len(pieces) == 1:
        scores, truncated, tokens = pieces[0]
    else:
        scores = {a: np.concatenate([p[0][a] for p in pieces]) for a in pieces[0][0]}
        truncated = np.concatenate([p[1] for p in pieces])
        tokens = np.concatenate([p[2] for p in pieces])
    job.pieces = []
    return PairsResult(scores=scores, truncated=truncated, num_tokens=tokens, timing=_timing(job))


def _resolve(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Give ``future`` its result or error, unless it is already resolved or cancelled (a request gone)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _digest(work: PairsWork | SearchWork) -> bytes:
    """Return a digest of what ``work`` asks, so the same request sent again is recognised."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(work, SearchWork):
        h.update(repr(("search", work.k, work.depth, work.retriever, work.rerank, work.query)).encode())
        return h.digest()
    queries, docs = work.queries, work.documents
    # a rerank request repeats one query for every document: hash it once
    one_query = bool(queries) and queries.count(queries[0]) == len(queries)
    shape = (work.activations, work.max_doc_tokens, one_query, list(map(len, queries)), list(map(len, docs)))
    h.update(repr(("pairs", *shape)).encode())  # the lengths make the joined texts below unambiguous
    h.update((queries[0] if one_query else "".join(queries)).encode("utf-8", "surrogatepass"))
    h.update("".join(docs).encode("utf-8", "surrogatepass"))
    return h.digest()
