"""The batching engine: token-budget batches over length-sorted, dynamically padded inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from crossrank.engine.base import Backend
from crossrank.errors import ConfigError

__all__ = ["PaddingSide", "pad_batch", "plan_batches", "run_encoded", "run_parallel"]

#: where a batch's pad tokens go: after the real tokens (encoders) or before them (last-token scoring)
PaddingSide = Literal["right", "left"]
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
    inputs: Mapping[str, npt.NDArray[Any]],
    lengths: npt.NDArray[np.int32],
    *,
    token_budget: int,
    max_batch_size: int,
    pad_values: Mapping[str, int] | None = None,
    padding_side: PaddingSide = "right",
    on_batch: Callable[[int], None] | None = None,
) -> npt.NDArray[np.float32]:
    """Return the backend's output rows, float32 ``(n, num_labels)`` in input order.

    ``inputs`` are named tensors ``(n, L)`` whose row ``i`` holds its ``lengths[i]`` real tokens
    first (as a tokenizer pads on the right). Batches are cut by :func:`plan_batches` and each is
    padded to its own longest row rounded up to 16 tokens (dynamic padding), on ``padding_side``,
    every tensor with its own value from ``pad_values`` (0 when unnamed). A backend with
    ``parallelism > 1`` gets that many batches in flight from a thread pool; backends release the
    GIL while they compute.

    Raises:
        ConfigError: ``padding_side`` is neither ``"right"`` nor ``"left"``.
    """
    if padding_side not in ("right", "left"):
        raise ConfigError(f"padding_side must be 'right' or 'left' (got {padding_side!r})")
    pads = dict(pad_values or {})
    out = np.empty((lengths.shape[0], backend.num_labels), dtype=np.float32)

    def run_one(idx: npt.NDArray[np.intp]) -> None:
        # Widths are rounded up to a bucket of 16 tokens: few distinct shapes keep compiled-kernel
        # caches warm and small, at a cost of at most 15 pad tokens per pair.
        width = -(-int(lengths[idx].max()) // _BUCKET) * _BUCKET
        batch = {
            name: pad_batch(t, idx, lengths, width=width, value=pads.get(name, 0), side=padding_side)
            for name, t in inputs.items()
        }
        out[idx] = backend.run(batch)
        if on_batch is not None:
            on_batch(idx.size)

    workers = int(getattr(backend, "parallelism", 1))
    batches = plan_batches(lengths, token_budget=token_budget, max_batch_size=max_batch_size, parallelism=workers)
    if workers <= 1:
        for idx in batches:
            run_one(idx)
        return out
    run_parallel(run_one, batches, workers=workers)
    return out


def pad_batch(
    tensor: npt.NDArray[Any],
    idx: npt.NDArray[np.intp],
    lengths: npt.NDArray[np.int32],
    *,
    width: int,
    value: int,
    side: PaddingSide = "right",
) -> npt.NDArray[Any]:
    """Return rows ``idx`` of ``tensor`` (real tokens first) padded with ``value`` to ``width`` on ``side``.

    ``width`` must be at least the longest of ``lengths[idx]``. With left padding each row's real
    tokens end at the last column, as last-token scoring needs.
    """
    if side == "right":
        have = tensor.shape[1]
        return np.pad(tensor[idx, :width], ((0, 0), (0, max(0, width - have))), constant_values=value)
    rows = tensor[idx]
    n = lengths[idx].astype(np.intp)[:, None]
    cols = np.arange(width)[None, :] - (width - n)  # source column of each target column
    real = cols >= 0
    picked = np.take_along_axis(rows, np.clip(cols, 0, max(rows.shape[1] - 1, 0)), axis=1) if rows.shape[1] else rows
    return np.where(real, picked, np.asarray(value, dtype=tensor.dtype)).astype(tensor.dtype, copy=False)


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
