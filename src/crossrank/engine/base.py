"""The backend plug point: one method that runs a model on one padded batch of named tensors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from crossrank.cpu import available_cores
from crossrank.errors import ModelError

__all__ = ["TASKS", "Backend", "Task", "default_threads", "graph_feed"]

#: what a backend computes: a classifier's logits, or an encoder's hidden states
Task = Literal["sequence-classification", "feature-extraction"]
TASKS: tuple[str, ...] = ("sequence-classification", "feature-extraction")


class Backend(Protocol):
    """Runs a model on one padded batch of named tensors.

    The caller (a model family) names the tensors: ``input_ids``, ``attention_mask`` and, for
    pair encoders, ``token_type_ids``, each ``(batch, length)``. The backend feeds the graph the
    ones it takes.

    Attributes:
        num_labels: the size of the output's last axis (logits per pair, or the vector width).
        parallelism: how many batches the backend can run at once from different threads (each
            on its own session or infer request); the engine keeps that many in flight.
    """

    num_labels: int
    parallelism: int

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Return the model's output, float32, first axis = batch (``(batch, num_labels)`` for logits)."""
        ...


def default_threads() -> int:
    """Return the number of cores this process may use: affinity mask and cgroup quota, or ``$CROSSRANK_THREADS``."""
    return available_cores()


def graph_feed(
    inputs: Mapping[str, npt.NDArray[Any]], graph_inputs: set[str], *, use_types: bool, where: object
) -> dict[str, npt.NDArray[Any]]:
    """Return the tensors a graph with inputs ``graph_inputs`` takes from the named ``inputs``.

    Segment ids are zeros for a model without segment embeddings (``use_types`` false) and for a
    caller that names none; any other input the graph wants and the caller lacks is an error.

    Raises:
        ModelError: the graph wants an input the caller did not name.
    """
    ids = inputs["input_ids"]
    feed: dict[str, npt.NDArray[Any]] = {}
    for name in graph_inputs:
        if name == "token_type_ids" and (not use_types or name not in inputs):
            feed[name] = np.zeros_like(ids)
        elif name in inputs:
            feed[name] = inputs[name]
        else:
            raise ModelError(
                f"{where} takes an input {name!r} that the model family does not produce "
                f"(it gives {sorted(inputs)}); export the graph with those inputs"
            )
    return feed
