"""The batching engine: token-budget batches over length-sorted, dynamically padded pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from crossrank.rerank.backends import Backend
from crossrank.rerank.encoding import EncodedPairs

__all__ = ["plan_batches", "run_encoded"]


def plan_batches(
    lengths: npt.NDArray[np.int32], *, token_budget: int, max_batch_size: int
) -> Iterator[npt.NDArray[np.intp]]:
    """Yield index arrays of batches, longest pairs first, each within the token budget.

    A batch's cost is ``len(batch) * longest pair in it`` (what padding makes the model read),
    so pairs are sorted by length and cut into runs whose padded size stays under ``token_budget``.
    """
    order = np.argsort(-lengths, kind="stable")
    n = order.size
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
) -> npt.NDArray[np.float32]:
    """Return raw logits, float32 ``(n, num_labels)`` in input order, for encoded pairs.

    Batches are sliced to their own longest pair (dynamic padding). A backend with
    ``parallelism > 1`` gets that many batches in flight from a thread pool; backends release the
    GIL while they compute.
    """
    out = np.empty((len(enc), backend.num_labels), dtype=np.float32)

    def run_one(idx: npt.NDArray[np.intp]) -> None:
        width = int(enc.lengths[idx].max())
        out[idx] = backend.run(
            np.ascontiguousarray(enc.input_ids[idx, :width]),
            np.ascontiguousarray(enc.attention_mask[idx, :width]),
            np.ascontiguousarray(enc.token_type_ids[idx, :width]),
        )
        if on_batch is not None:
            on_batch(idx.size)

    batches = plan_batches(enc.lengths, token_budget=token_budget, max_batch_size=max_batch_size)
    workers = int(getattr(backend, "parallelism", 1))
    if workers <= 1:
        for idx in batches:
            run_one(idx)
        return out
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crossrank") as pool:
        for fut in [pool.submit(run_one, idx) for idx in batches]:
            fut.result()
    return out
