"""Scale-out on Ray (``crossrank[ray]``): batch reranking with Ray Data, replicated serving with Ray Serve.

Nothing here schedules work by itself: Ray Data runs the batch jobs (a pool of actors, each with
the model loaded once) and Ray Serve runs the replicas, their request batching and autoscaling.
"""

from __future__ import annotations

from crossrank.scale.batch import (
    BatchResult,
    BatchSummary,
    read_pairs,
    rerank_here,
    rerank_on_ray,
    run_pairs,
    write_output,
)

__all__ = [
    "BatchResult",
    "BatchSummary",
    "read_pairs",
    "rerank_here",
    "rerank_on_ray",
    "run_pairs",
    "write_output",
]
