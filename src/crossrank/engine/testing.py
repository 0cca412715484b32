"""A backend for tests: deterministic scores computed from the token ids, no model, no graph.

Use it, as httpx's ``MockTransport``, to test code that runs a backend without loading a model::

    from crossrank.engine import register_backend
    register_backend("fake", "crossrank.engine.testing:FakeBackend")
    ce = CrossEncoder("default", backend="fake")   # the real tokenizer, fake logits

A pair's logit is the share of its document's tokens that also occur in its query (token
overlap, a crude relevance signal), so a document that repeats the query scores higher. Only real
tokens count (``attention_mask == 1``): the score depends neither on padding, its side, nor on
batch-mates. Inputs without ``token_type_ids`` score the mean of a fixed pseudo-random weight per
token id instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.engine.base import Task
from crossrank.errors import ConfigError
from crossrank.models.source import ModelFiles

__all__ = ["FakeBackend", "fake_logit"]


class FakeBackend:
    """A backend that scores token overlap; see the module docstring.

    Args:
        num_labels: logits per row; label ``j`` is the overlap times ``j + 1``.
        parallelism: batches the engine keeps in flight (above 1 exercises the thread pool).

    Attributes:
        calls: how many batches it ran.
        batch_sizes: the size of each batch it ran, in the order they ran.

    Example:
        >>> import numpy as np
        >>> ids = np.array([[101, 7, 8, 102, 7, 9, 102]])  # document tokens 7 and [SEP] are in the query
        >>> FakeBackend().run({"input_ids": ids, "attention_mask": np.ones_like(ids),
        ...                    "token_type_ids": np.array([[0, 0, 0, 0, 1, 1, 1]])}).round(3)
        array([[0.667]], dtype=float32)
    """

    def __init__(self, *, num_labels: int = 1, parallelism: int = 1) -> None:
        if num_labels < 1 or parallelism < 1:
            raise ConfigError(f"num_labels and parallelism must be >= 1 (got {num_labels}, {parallelism})")
        self.num_labels = num_labels
        self.parallelism = parallelism
        self.model_file = None
        self.calls = 0
        self.batch_sizes: list[int] = []

    @classmethod
    def load(cls, files: ModelFiles, *, task: Task, threads: int | None = None, **options: Any) -> FakeBackend:
        """Return a fake for any model; ``options`` may hold ``num_labels`` and ``parallelism``."""
        return cls(num_labels=int(options.get("num_labels", 1)), parallelism=int(options.get("parallelism", 1)))

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Return ``(batch, num_labels)`` float32 logits: :func:`fake_logit` of each row, times ``j + 1``."""
        ids = np.asarray(inputs["input_ids"])
        mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids)))
        types = inputs.get("token_type_ids")
        self.calls += 1
        self.batch_sizes.append(int(ids.shape[0]))
        base = np.array(
            [
                fake_logit(ids[r][mask[r] == 1], None if types is None else np.asarray(types)[r][mask[r] == 1])
                for r in range(ids.shape[0])
            ],
            dtype=np.float32,
        )
        scale = np.arange(1, self.num_labels + 1, dtype=np.float32)
        out: npt.NDArray[np.float32] = base[:, None] * scale[None, :]
        return out


def fake_logit(ids: npt.NDArray[Any], types: npt.NDArray[Any] | None) -> float:
    """Return the fake logit of one sequence's real tokens (``types``: its segment ids, or ``None``)."""
    if ids.size == 0:
        return 0.0
    if types is not None and (types == 1).any():
        query = set(ids[types == 0].tolist())
        doc = ids[types == 1]
        return float(np.mean([t in query for t in doc.tolist()]))
    return float(np.mean(np.sin(ids.astype(np.float64) * 12.9898) * 0.5))
