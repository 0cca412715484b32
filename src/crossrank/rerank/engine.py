"""The batching engine: token-budget batches over length-sorted, dynamically padded pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from crossrank.rerank.backends import Backend
from crossrank.rerank.encoding import EncodedPairs

__all__ = ["plan_batches", "run_encoded", "run_parallel"]

_BUCKET = 16
T = TypeVar("T")


def plan_batches(
    lengths: npt.NDArray[np.int32], *, token_budget: int, max_batch_size: int, parallelism: int = 1
) -> Iterator[npt.NDArray[np.intp]]:
    """Yield index arrays of batches, longest pairs first, each within the token budget.

    A batch's cost is ``len(batch) * longest pair in it`` (what padding makes the model read),
    so pairs are sorted by length and cut into runs whose padded size stays under ``token_budget``.
    With ``parallelism`` workers, the batch size is evened out so the batch count is a multiple of
    it: 100 pairs on 2 streams become 4 batches of 25, not 64 + 36 (which leaves a stream idle).
    """
    order = np.argsort(-lengths, kind="stable")
    n = order.size
    if parallelism > 1 and n:
        n_batches = -(-n // max_batch_size)
        n_batches = -(-n_batches // parallelism) * parallelism
        max_batch_size = max(1, -(-n // n_batches))
    start = 0
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch_size, token_budget // longest, n - start))
        yield order[start : start + size]
        start += size


def run_encoded(
    backend: Backend,
    enc: EncodedPairs,
    *,
    token_budget: int,
    max_batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    pad_id: int = 0,
) -> npt.NDArray[np.float32]:
    """Return raw logits, float32 ``(n, num_labels)`` in input order, for encoded pairs.

    Batches are sliced to their own longest pair (dynamic padding). A backend with
    ``parallelism > 1`` gets that many batches in flight from a thread pool; backends release the
    GIL while they compute.
    """
    out = np.empty((len(enc), backend.num_labels), dtype=np.float32)

    def run_one(idx: npt.NDArray[np.intp]) -> None:
        # Widths are rounded up to a bucket of 16 tokens: few distinct shapes keep compiled-kernel
        # caches warm and small, at a cost of at most 15 pad tokens per pair.
        width = -(-int(enc.lengths[idx].max()) // _BUCKET) * _BUCKET
        have = enc.input_ids.shape[1]
        pad = ((0, 0), (0, max(0, width - have)))
        out[idx] = backend.run(
            np.pad(enc.input_ids[idx, :width], pad, constant_values=pad_id),
            np.pad(enc.attention_mask[idx, :width], pad),
            np.pad(enc.token_type_ids[idx, :width], pad),
        )
        if on_batch is not None:
            on_batch(idx.size)

    workers = int(getattr(backend, "parallelism", 1))
    batches = plan_batches(enc.lengths, token_budget=token_budget, max_batch_size=max_batch_size, parallelism=workers)
    if workers <= 1:
        for idx in batches:
            run_one(idx)
        return out
    run_parallel(run_one, batches, workers=workers)
    return out


def run_parallel(fn: Callable[[T], None], items: Iterable[T], *, workers: int, name: str = "crossrank") -> None:
    """Call ``fn`` on every item from ``workers`` threads, in order of submission; raise the first error.

    When the caller is interrupted (Ctrl-C) or a call fails, the calls not yet started are
    cancelled: only the ``workers`` already running finish, instead of every queued batch (a hybrid
    index build went on for minutes after Ctrl-C).
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        for fut in [pool.submit(fn, item) for item in items]:
            fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
