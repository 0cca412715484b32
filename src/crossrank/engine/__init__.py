"""The engine: backends that run a model, the batching that feeds them, and the rule that picks one.

It sits above :mod:`crossrank.models` and below both stages: the cross-encoder
(:mod:`crossrank.rerank`) and the bi-encoder (:mod:`crossrank.retrieve.embed`) load their backend
through :func:`load_backend` and batch through :func:`run_encoded` or :func:`plan_batches`.
A backend takes named tensors (``input_ids``, ``attention_mask``, ...), which the model family
produces, and returns float32 rows. :mod:`crossrank.engine.testing` has a fake for tests.
"""

from __future__ import annotations

from crossrank.engine.base import Backend, Task, default_threads
from crossrank.engine.batching import PaddingSide, pad_batch, plan_batches, run_encoded, run_parallel
from crossrank.engine.choice import choose_backend
from crossrank.engine.registry import (
    available_backends,
    check_backend_name,
    load_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "Backend",
    "PaddingSide",
    "Task",
    "available_backends",
    "check_backend_name",
    "choose_backend",
    "default_threads",
    "load_backend",
    "pad_batch",
    "plan_batches",
    "register_backend",
    "run_encoded",
    "run_parallel",
    "unregister_backend",
]
