"""What the server needs from a cross-encoder (and a pipeline), in one place.

The server merges pairs of several requests into one model call and needs, from that one call,
scores under each activation its requests asked for, plus truncation flags and token counts; and
it orders results exactly as :meth:`CrossEncoder.rerank` does. This adapter is the only part of
the server that reaches into the cross-encoder's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crossrank.errors import ConfigError
from crossrank.ranking import ScoredPairs
from crossrank.rerank.config import Activation
from crossrank.rerank.cross_encoder import CrossEncoder
from crossrank.retrieve.pipeline import Pipeline, SearchResult

__all__ = ["ServedModel"]

_PROBABILITIES = ("sigmoid", "softmax", "calibrated")


class ServedModel:
    """A loaded cross-encoder, and optionally a pipeline over an index, as the server uses them.

    Args:
        reranker: the cross-encoder; it is used from one thread at a time (the batcher's).
        pipeline: a pipeline whose reranker is ``reranker``, for ``/v1/search``; or ``None``.
    """

    def __init__(self, reranker: CrossEncoder, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None and pipeline.reranker is not reranker:
            raise ConfigError("the pipeline must rerank with the served cross-encoder (Pipeline(index, reranker=ce))")
        self.reranker = reranker
        self.pipeline = pipeline

    def warm_up(self) -> None:
        """Score one pair, so the engine's one-time setup is done before requests arrive.

        The first inference must not start on several engine threads at once: OpenVINO's Python
        binding initialises its numpy bridge lazily, and two threads doing that together were seen
        to deadlock. One pair runs as one batch on one thread.
        """
        self.reranker.score([("warm up", "warm up")])

    @property
    def name(self) -> str:
        """Return the model's name."""
        return self.reranker.name

    @property
    def max_length(self) -> int:
        """Return the most tokens of one pair."""
        return int(self.reranker.config.max_length or 512)

    @property
    def activation(self) -> Activation:
        """Return the activation scores get by default (the library's default for this model)."""
        return self.reranker.activation

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the model's output labels."""
        return self.reranker.labels

    def describe(self) -> dict[str, Any]:
        """Return JSON-ready facts about the model."""
        return {
            "max_length": self.max_length,
            "activation": self.activation,
            "labels": list(self.labels),
            "backend": self.reranker.backend_name,
            "index": str(self.pipeline.index.folder) if self.pipeline is not None else None,
        }

    @staticmethod
    def is_probability(activation: Activation) -> bool:
        """Return whether scores under ``activation`` are probabilities (else raw logits)."""
        return activation in _PROBABILITIES

    def output_activation(self, raw_scores: bool) -> Activation:
        """Return the activation of a request's scores: the model's default, or ``"none"`` (logits)."""
        return "none" if raw_scores else self.activation

    def order_activation(self, activation: Activation) -> Activation:
        """Return the activation whose scores order results, as ``CrossEncoder.rerank`` does.

        Calibrated scores are ordered by the uncalibrated ones (isotonic maps tie); any other
        activation orders by itself, so ties keep input order exactly as in the library.
        """
        if activation == self.reranker.activation:
            return self.reranker._rank_activation
        return activation

    def relevance_column(self) -> int | None:
        """Return the output column that ranks documents; ``None`` for one-logit models."""
        if self.reranker.num_labels == 1:
            return None
        return self.reranker._label_index_or_raise()

    def check_query(self, query: str) -> None:
        """Raise :class:`~crossrank.errors.InputError` when ``query`` leaves no room for a document."""
        self.reranker.encoder.check_queries([query])

    def cut(self, document: str, max_tokens: int) -> tuple[str, bool]:
        """Return ``document`` cut to its first ``max_tokens`` tokens, and whether it was cut."""
        if len(document) <= max_tokens:  # every token covers at least one character
            return document, False
        windows = self.reranker.encoder.windows(document, budget=max_tokens, stride=max_tokens)
        return windows[0], len(windows) > 1

    def score(self, queries: list[str], documents: list[str], activations: Sequence[Activation]) -> list[ScoredPairs]:
        """Return the pairs' scores under each activation, from one model call.

        Raises:
            InputError: a query is too long or a text is empty.
            ConfigError: an activation is not available for this model.
        """
        return self.reranker._score_as(queries, documents, tuple(activations))

    def search(self, queries: list[str], *, k: int, depth: int, retriever: Any, rerank: bool) -> list[SearchResult]:
        """Return one search result per query from the pipeline, all queries in shared batches."""
        assert self.pipeline is not None  # the route checks
        return self.pipeline.search_many(queries, k=k, depth=depth, retriever=retriever, rerank=rerank)
