"""The batching engine now lives in :mod:`crossrank.engine.batching`; this module re-exports it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from crossrank.engine.base import Backend
from crossrank.engine.batching import plan_batches, run_parallel
from crossrank.engine.batching import run_encoded as _run_named
from crossrank.models.encoding import EncodedPairs

__all__ = ["plan_batches", "run_encoded", "run_parallel"]


def run_encoded(
    backend: Backend,
    enc: EncodedPairs,
    *,
    token_budget: int,
    max_batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    pad_id: int = 0,
) -> npt.NDArray[np.float32]:
    """Return raw logits, float32 ``(n, num_labels)`` in input order, for encoded pairs (right padding).

    The old signature of :func:`crossrank.engine.run_encoded`, which takes named tensors.
    """
    return _run_named(
        backend,
        enc.tensors(),
        enc.lengths,
        token_budget=token_budget,
        max_batch_size=max_batch_size,
        pad_values={"input_ids": pad_id},
        on_batch=on_batch,
    )
