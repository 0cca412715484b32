"""Batch reranking of many (query, document) pairs on a Ray cluster, through Ray Data.

The driver reads the pairs (a TREC run with its corpus and queries, or Parquet/JSONL rows of
``query_id, query, doc_id, text``), numbers them, and cuts them into fixed blocks of
``block_pairs`` rows. Ray Data maps the blocks through a pool of actors; each actor loads the
model once and scores a block with the same engine as :class:`~crossrank.CrossEncoder`
(length-sorted, token-budget batches). Blocks are cut by the driver, never by the number of
workers, so every block is scored the same way whatever the pool size, and the output is the same.

When a worker process dies, Ray restarts the actor and runs its unfinished block again (Ray
Data's actor pool: ``max_restarts=-1``, ``max_task_retries=-1``). A small ledger actor counts
block attempts and actor starts so the summary can report the retries, and the driver checks
that every input pair came back exactly once before it writes anything.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank._progress import stderr_progress
from crossrank._text import plural
from crossrank.errors import CrossrankError, InputError
from crossrank.ranking import Hit, Ranking, rank_order

if TYPE_CHECKING:
    import pyarrow as pa

    from crossrank.rerank.cross_encoder import CrossEncoder

__all__ = ["BatchResult", "BatchSummary", "read_pairs", "rerank_here", "rerank_on_ray", "run_pairs", "write_output"]

log = logging.getLogger(__name__)

_PASS_ENV = ("CROSSRANK_CACHE", "HF_HOME", "HF_HUB_OFFLINE")

COLUMNS = ("query_id", "query", "doc_id", "text")
"""The columns of a pairs table, in this order."""


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """How a batch job went.

    Attributes:
        pairs: pairs scored (each exactly once in the output).
        queries: distinct query ids.
        workers: actors in the pool.
        blocks: blocks the pairs were cut into.
        seconds: wall time from submitting the first block to receiving the last.
        pairs_per_s: ``pairs / seconds``.
        retries: block attempts beyond the first (a block whose worker died is run again).
        worker_starts: actor starts, restarts after a death included.
        truncated: pairs whose document was cut to the model's ``max_length``.
        address: the Ray cluster the job ran on (``"local"`` for the in-process engine).
        max_length: the most tokens per pair the model read.
    """

    pairs: int
    queries: int
    workers: int
    blocks: int
    seconds: float
    pairs_per_s: float
    retries: int
    worker_starts: int
    truncated: int
    address: str
    max_length: int

    @property
    def worker_restarts(self) -> int:
        """Return how many actors were started again after their process died."""
        return max(0, self.worker_starts - self.workers)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-ready values."""
        return {**asdict(self), "worker_restarts": self.worker_restarts}


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The scores of a batch job.

    Attributes:
        table: one row per input pair, in input order: ``query_id``, ``doc_id``, ``score``,
            ``rank`` (1 = best within its query; ties keep input order), ``truncated``.
        rankings: one :class:`~crossrank.Ranking` per query, in order of first appearance,
            cut to ``k`` hits when ``k`` was given.
        summary: counts, timing and retries.
    """

    table: pa.Table
    rankings: list[Ranking]
    summary: BatchSummary


# ---------------------------------------------------------------------- reading pairs


def run_pairs(
    run: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    queries: str | os.PathLike[str],
    *,
    depth: int = 100,
    skip_missing: bool = False,
) -> tuple[pa.Table, dict[str, int]]:
    """Return the pairs of a first-stage TREC run: its top ``depth`` per query, with their texts.

    Documents get the same text :meth:`CrossEncoder.rerank` scores (title and text joined).

    Returns:
        The pairs table (``query_id, query, doc_id, text``, in run order), and the counts of
        ``skipped_queries`` and ``skipped_docs`` (non-zero only with ``skip_missing``).

    Raises:
        InputError: a file cannot be read, ``depth`` is not positive, or the run names queries or
            documents the files lack (unless ``skip_missing``).
    """
    pa_ = require("pyarrow", feature="batch reranking on Ray")
    from crossrank.io import read_run_candidates

    if depth < 1:
        raise InputError(f"depth must be >= 1 (got {depth})")
    found = read_run_candidates(Path(run), Path(queries), Path(corpus), depth=depth, skip_missing=skip_missing)
    cols = dict(zip(COLUMNS, found.pairs(), strict=True))
    table = pa_.table({c: pa_.array(v, type=pa_.string()) for c, v in cols.items()})
    _check_pairs(table, str(run))
    return table, {"skipped_queries": len(found.missing_queries), "skipped_docs": len(found.missing_docs)}


def read_pairs(path: str | os.PathLike[str]) -> pa.Table:
    """Return the pairs of a Parquet (``.parquet``) or JSONL (``.jsonl``/``.json``) file.

    Each row needs ``query_id``, ``query``, ``doc_id`` and ``text`` (other columns are ignored);
    ids may be strings or integers.

    Raises:
        InputError: the file cannot be read, a column is missing, a text is empty or not a string,
            or a (query_id, doc_id) pair repeats.
    """
    pa_ = require("pyarrow", feature="batch reranking on Ray")
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"pairs file {p} does not exist; give a .parquet or .jsonl file of query_id, query, doc_id, text"
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(p)
        elif suffix in (".jsonl", ".json"):
            import pyarrow.json as pj

            table = pj.read_json(p)
        else:
            raise InputError(f"pairs file {p} must end in .parquet, .jsonl or .json (got {p.suffix!r})")
    except pa_.ArrowInvalid as err:
        raise InputError(f"cannot read pairs from {p}: {err}; each row needs {', '.join(COLUMNS)}") from err
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"{p} lacks column(s) {', '.join(missing)} (has {', '.join(table.column_names) or 'none'}); "
            f"each row needs {', '.join(COLUMNS)}"
        )
    out = {}
    for c in COLUMNS:
        col = table.column(c)
        if c in ("query_id", "doc_id") and pa_.types.is_integer(col.type):
            col = col.cast(pa_.string())
        if not (pa_.types.is_string(col.type) or pa_.types.is_large_string(col.type)):
            raise InputError(f"{p}: column {c!r} must hold strings (got {col.type})")
        out[c] = col.cast(pa_.string())
    table = pa_.table(out)
    _check_pairs(table, str(p))
    return table


def _check_pairs(table: pa.Table, where: str) -> None:
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise InputError(f"{where} holds no pairs to rerank")
    for c in COLUMNS:
        col = table.column(c)
        bad = pc.or_(pc.is_null(col), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col.fill_null(""))), 0))
        if pc.any(bad).as_py():
            i = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
            raise InputError(
                f"{where}: row {i + 1} has an empty {c!r} (query_id {table.column('query_id')[i].as_py()!r}, "
                f"doc_id {table.column('doc_id')[i].as_py()!r}); drop the row or fill it in"
            )
    keys = pc.binary_join_element_wise(table.column("query_id"), table.column("doc_id"), "\x1f")
    if pc.count_distinct(keys).as_py() != table.num_rows:
        counts = pc.value_counts(keys)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        qid, did = repeated[0]["values"].as_py().split("\x1f", 1)
        raise InputError(
            f"{where}: {len(repeated)} (query_id, doc_id) pairs repeat (first: {qid!r}, {did!r}); "
            "each pair must appear once"
        )


# ---------------------------------------------------------------------- the actors


class _Ledger:
    """Counts actor starts and block attempts, so retries can be reported (runs as a Ray actor)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.attempts: dict[int, int] = {}
        self.done: dict[int, int] = {}
        self.busy: dict[int, float] = {}  # pid -> when its current block began
        self.max_length = 0

    def started(self, pid: int, max_length: int) -> None:
        self.starts.append(pid)
        self.max_length = max_length

    def begin(self, block: int, pid: int) -> None:
        self.attempts[block] = self.attempts.get(block, 0) + 1
        self.busy[pid] = time.monotonic()

    def finish(self, block: int, pid: int) -> None:
        self.done[block] = pid
        self.busy.pop(pid, None)

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "starts": len(self.starts),
            "pids": list(self.starts),
            "retries": sum(n - 1 for n in self.attempts.values()),
            "finished": len(self.done),
            "busy_for": {pid: now - t for pid, t in self.busy.items()},
            "max_length": self.max_length,
        }


class _Scorer:
    """One worker of the pool: loads the model once, then scores whole blocks (a Ray Data UDF)."""

    def __init__(self, model: str, backend: str, max_length: int | None, threads: int | None, ledger: str) -> None:
        import ray

        from crossrank.rerank.config import ScoringConfig
        from crossrank.rerank.cross_encoder import CrossEncoder

        self.ce = CrossEncoder(
            model,
            backend=backend,
            config=ScoringConfig(max_length=max_length, threads=threads),
        )
        self.ce.relevance_column  # noqa: B018 - a multi-label model without a relevance label fails at start
        self.ledger: Any = ray.get_actor(ledger)
        self.pid = os.getpid()
        self.ledger.started.remote(self.pid, int(self.ce.config.max_length or 0))

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa_

        rows = batch.column("row").to_numpy()
        block = int(rows[0])
        self.ledger.begin.remote(block, self.pid)
        out = self.score(batch.column("query").to_pylist(), batch.column("text").to_pylist())
        self.ledger.finish.remote(block, self.pid)
        return pa_.table({"row": rows, **out})

    def score(self, queries: list[str], texts: list[str]) -> dict[str, npt.NDArray[Any]]:
        """Return score (the model's activation), key (what ranks) and truncation of each pair."""
        ce = self.ce
        shown = ce.activation
        scored = ce.score_pairs(queries, texts, activations=(shown, ce.ranking_activation(shown)))
        score, key = ce.relevance(scored[0].scores), ce.relevance(scored[1].scores)
        return {"score": score, "key": key, "truncated": scored[0].truncated, "num_tokens": scored[0].num_tokens}


# ---------------------------------------------------------------------- the job


def rerank_on_ray(
    pairs: pa.Table,
    *,
    model: str | os.PathLike[str] = "default",
    backend: Literal["auto", "onnx", "torch", "openvino"] = "auto",
    max_length: int | None = None,
    workers: int = 2,
    threads_per_worker: int = 1,
    address: str | None = None,
    block_pairs: int = 1024,
    k: int | None = None,
    progress: bool = False,
    on_start: Callable[[Any], None] | None = None,
) -> BatchResult:
    """Score every pair on a Ray cluster and rank each query's documents.

    The result does not depend on ``workers``: blocks are cut by ``block_pairs`` alone.

    Args:
        pairs: a table with ``query_id, query, doc_id, text`` (see :func:`run_pairs`, :func:`read_pairs`).
        model: a built-in name, a local folder or a hub id, loaded once per worker.
        backend: the engine each worker runs.
        max_length: most tokens per pair; ``None`` takes the model's.
        workers: actors in the pool.
        threads_per_worker: CPUs each actor reserves and its engine's threads.
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); ``None``
            joins the cluster this process is connected to, or starts a local one.
        block_pairs: pairs per block (the unit of work and of retry).
        k: keep the best ``k`` per query in ``rankings`` (``table`` always holds every pair).
        progress: show a progress bar of pairs scored.
        on_start: called with the ledger actor once the job is submitted (tests use it to watch
            the workers).

    Raises:
        InputError: the pairs or settings are wrong.
        ModelNotFoundError: the model cannot be found (checked before any worker starts).
        MissingDependencyError: ``crossrank[ray]`` is not installed.
        CrossrankError: the job lost or repeated pairs (never expected; nothing is written then).
    """
    ray = require("ray", feature="the Ray engine")
    pa_ = require("pyarrow", feature="the Ray engine")
    from crossrank.models.source import resolve

    for name, value, low in (("workers", workers, 1), ("threads_per_worker", threads_per_worker, 1)):
        if not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an int >= {low} (got {value!r})")
    if not isinstance(block_pairs, int) or block_pairs < 1:
        raise InputError(f"block_pairs must be an int >= 1 (got {block_pairs!r})")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise InputError(f"k must be a positive int or None (got {k!r})")
    missing = [c for c in COLUMNS if c not in pairs.column_names]
    if missing:
        raise InputError(f"the pairs table lacks column(s) {', '.join(missing)}; it needs {', '.join(COLUMNS)}")
    _check_pairs(pairs, "the pairs table")
    model_name = str(model)
    resolve(model_name)  # an unknown model fails here, not in every worker

    connect(ray, address, workers * threads_per_worker)
    n = pairs.num_rows
    numbered = pairs.select(list(COLUMNS)).append_column("row", pa_.array(np.arange(n, dtype=np.int64)))
    # one object per block, cut here: the blocks never depend on the pool size
    refs = [ray.put(numbered.slice(i, block_pairs).combine_chunks()) for i in range(0, n, block_pairs)]
    ledger_name = f"crossrank-ledger-{uuid.uuid4().hex[:12]}"
    ledger = ray.remote(num_cpus=0)(_Ledger).options(name=ledger_name).remote()
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    dataset = ray.data.from_arrow_refs(refs).map_batches(
        _Scorer,
        fn_constructor_kwargs={
            "model": model_name,
            "backend": backend,
            "max_length": max_length,
            "threads": threads_per_worker,
            "ledger": ledger_name,
        },
        batch_size=block_pairs,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads_per_worker,
        # workers build or reuse the optimized graph where this process does
        runtime_env={"env_vars": {v: os.environ[v] for v in _PASS_ENV if v in os.environ}},
    )
    score = np.zeros(n, dtype=np.float32)
    key = np.zeros(n, dtype=np.float32)
    truncated = np.zeros(n, dtype=np.bool_)
    seen = np.zeros(n, dtype=np.int32)
    started = time.perf_counter()
    if on_start is not None:
        on_start(ledger)
    with _progress(progress, n) as advance:
        for out in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            rows = out.column("row").to_numpy()
            score[rows] = out.column("score").to_numpy()
            key[rows] = out.column("key").to_numpy()
            truncated[rows] = out.column("truncated").to_numpy(zero_copy_only=False)
            np.add.at(seen, rows, 1)
            advance(len(rows))
    seconds = time.perf_counter() - started
    stats = ray.get(ledger.stats.remote())
    ray.kill(ledger)
    lost, repeated = int((seen == 0).sum()), int((seen > 1).sum())
    if lost or repeated:
        raise CrossrankError(
            f"the Ray job returned {plural(lost, 'pair')} zero times and {repeated} more than once (of {n}); nothing "
            "was written; run it again"
        )
    table, rankings = _rank(pairs, score, key, truncated, k)
    summary = BatchSummary(
        pairs=n,
        queries=len(rankings),
        workers=workers,
        blocks=len(refs),
        seconds=round(seconds, 3),
        pairs_per_s=round(n / seconds, 1) if seconds > 0 else 0.0,
        retries=int(stats["retries"]),
        worker_starts=int(stats["starts"]),
        truncated=int(truncated.sum()),
        address=str(ray.get_runtime_context().gcs_address),
        max_length=int(stats["max_length"]),
    )
    return BatchResult(table=table, rankings=rankings, summary=summary)


def rerank_here(pairs: pa.Table, ce: CrossEncoder, *, k: int | None = None) -> BatchResult:
    """Score every pair in this process with ``ce``; the same result as :func:`rerank_on_ray` gives.

    Raises:
        InputError: the pairs are wrong (see :func:`read_pairs`).
    """
    _check_pairs(pairs, "the pairs table")
    scorer = _Scorer.__new__(_Scorer)
    scorer.ce, scorer.ledger, scorer.pid = ce, None, os.getpid()
    ce.relevance_column  # noqa: B018 - a multi-label model without a relevance label fails before scoring
    started = time.perf_counter()
    out = scorer.score(pairs.column("query").to_pylist(), pairs.column("text").to_pylist())
    seconds = time.perf_counter() - started
    table, rankings = _rank(pairs, out["score"], out["key"], out["truncated"], k)
    n = pairs.num_rows
    summary = BatchSummary(
        pairs=n,
        queries=len(rankings),
        workers=1,
        blocks=1,
        seconds=round(seconds, 3),
        pairs_per_s=round(n / seconds, 1) if seconds > 0 else 0.0,
        retries=0,
        worker_starts=1,
        truncated=int(out["truncated"].sum()),
        address="local",
        max_length=int(ce.config.max_length or 0),
    )
    return BatchResult(table=table, rankings=rankings, summary=summary)


def connect(ray: Any, address: str | None, cpus: int) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local one with at least ``cpus`` CPUs.

    Raises:
        InputError: the cluster cannot be reached.
    """
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address is None:
        address = os.environ.get("RAY_ADDRESS")
    try:
        if address is None:
            ray.init(num_cpus=max(cpus, os.cpu_count() or 1), include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ConnectionError as err:
        raise InputError(
            f"cannot reach the Ray cluster at {address!r} ({err}); start one with `ray start --head` "
            "or pass --address of a running cluster"
        ) from err


def _rank(
    pairs: pa.Table,
    score: npt.NDArray[np.float32],
    key: npt.NDArray[np.float32],
    truncated: npt.NDArray[np.bool_],
    k: int | None,
) -> tuple[pa.Table, list[Ranking]]:
    """Rank each query's pairs as :meth:`CrossEncoder.rerank_many` does: by ``key``, ties in input order."""
    import pyarrow as pa_
    import pyarrow.compute as pc

    qids = pairs.column("query_id")
    codes = pc.dictionary_encode(qids).combine_chunks()
    group = codes.indices.to_numpy()
    n = len(group)
    # first appearance order of the queries; inside a query, best key first, then input order
    order = rank_order(key, groups=group)
    rank = np.empty(n, dtype=np.int32)
    sorted_groups = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    lengths = np.diff(np.r_[starts, n])
    rank[order] = np.arange(n) - np.repeat(starts, lengths) + 1
    doc_ids = pairs.column("doc_id").to_pylist()
    qid_list = codes.dictionary.to_pylist()
    rankings = []
    for s, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        rows = order[s : s + (length if k is None else min(k, length))]
        qrows = order[s : s + length]
        hits = tuple(
            Hit(
                doc_id=doc_ids[i],
                score=float(score[i]),
                index=int(i - qrows.min()),
                truncated=bool(truncated[i]),
                rank=r,
            )
            for r, i in enumerate(rows.tolist(), start=1)
        )
        rankings.append(
            Ranking(hits=hits, query_id=qid_list[sorted_groups[s]], num_truncated=int(truncated[qrows].sum()))
        )
    table = pa_.table(
        {
            "query_id": qids,
            "doc_id": pairs.column("doc_id"),
            "score": pa_.array(score),
            "rank": pa_.array(rank),
            "truncated": pa_.array(truncated),
        }
    )
    return table, rankings


def write_output(result: BatchResult, path: str | os.PathLike[str], *, tag: str = "crossrank") -> int:
    """Write ``result`` to ``path`` (``.parquet``: every pair in input order; else a TREC run); return rows written.

    The file is written to a temporary name and renamed, so a killed job leaves no half-written output.
    """
    from crossrank.io import write_trec_run

    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(result.table, tmp)
        written = int(result.table.num_rows)
    else:
        with tmp.open("w", encoding="utf-8") as fh:
            written = write_trec_run(result.rankings, fh, tag=tag)
    tmp.replace(p)
    return written


class _progress:
    """A rich progress bar of pairs scored, or nothing."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total = show, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda _: None
        self._bar = stderr_progress("reranking on Ray", unit="pairs")
        self._bar.start()
        task = self._bar.add_task("pairs", total=self.total)
        return lambda count: self._bar.advance(task, count)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
