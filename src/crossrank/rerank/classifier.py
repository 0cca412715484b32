"""The sequence-classification family: BERT-style cross-encoders with a classification head.

The query and the document are one input (``[CLS] query [SEP] document [SEP]``, segment ids 0
then 1), padded on the right; the head's logits are the scores. This is the family of
``cross-encoder/ms-marco-*``, ``BAAI/bge-reranker-base/large``, ``mixedbread-ai/mxbai-rerank-*-v1``
and the NLI and STS cross-encoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank._progress import counting
from crossrank.engine import Backend, load_backend, run_encoded
from crossrank.models.encoding import PairEncoder
from crossrank.models.tokenizer import model_max_length
from crossrank.ranking import ScoredPairs

if TYPE_CHECKING:
    from crossrank.models.source import ModelFiles
    from crossrank.rerank.config import Activation, ScoringConfig

__all__ = ["SequenceClassifier"]

# Pairs are tokenized this many at a time, after a global sort by character length, so memory
# stays bounded and each chunk's pairs have similar lengths.
_CHUNK = 4096


class SequenceClassifier:
    """Score pairs with a sequence-classification cross-encoder on one backend.

    Args:
        encoder: the pair tokenizer (its ``max_length`` is the model's limit for a pair).
        backend: the engine running the graph.
        labels: the head's label names.
        config: scoring settings (token budget, batch size).
        name: the model's name, for messages.
        progress: show a progress bar on long inputs.
    """

    def __init__(
        self,
        encoder: PairEncoder,
        backend: Backend,
        *,
        labels: tuple[str, ...],
        config: ScoringConfig,
        name: str = "",
        progress: bool = False,
    ) -> None:
        self.encoder = encoder
        self.backend = backend
        self.labels = labels
        self.name = name
        self.max_length = encoder.max_length
        self.progress = progress
        self.backend_name = ""
        self.backend_reason = ""
        self.default_activation: Activation = "sigmoid" if len(labels) == 1 else "softmax"
        self._token_budget = config.token_budget
        cap = getattr(backend, "max_batch_size", None)
        self._max_batch_size = min(config.max_batch_size, cap) if cap else config.max_batch_size

    @classmethod
    def from_files(
        cls, files: ModelFiles, *, backend: str, config: ScoringConfig, progress: bool = False, reason: str = ""
    ) -> SequenceClassifier:
        """Return the scorer of a model's files on ``backend`` (``"onnx"``, ``"openvino"`` or ``"torch"``)."""
        model_max = model_max_length(files.config)
        max_length = min(config.max_length or model_max, model_max)
        encoder = PairEncoder(files.tokenizer_file, max_length=max_length)
        engine = load_backend(
            files,
            task="sequence-classification",
            backend=backend,
            threads=config.threads,
            options={"instances": config.instances, "precision": config.precision},
        )
        scorer = cls(
            encoder,
            engine,
            labels=_labels(files.config, engine.num_labels),
            config=config,
            name=files.name,
            progress=progress,
        )
        scorer.backend_name, scorer.backend_reason = backend, reason
        scorer.default_activation = _default_activation(files, engine.num_labels)
        return scorer

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> ScoredPairs:
        """Return the raw logits, float32 ``(n, num_labels)`` in input order, with truncation and token counts."""
        n = len(queries)
        logits = np.empty((n, len(self.labels)), dtype=np.float32)
        truncated = np.zeros(n, dtype=np.bool_)
        tokens = np.zeros(n, dtype=np.int32)
        if n == 0:
            return ScoredPairs(logits, truncated, tokens)
        chars = np.fromiter((len(q) + len(d) for q, d in zip(queries, documents, strict=True)), np.int64, count=n)
        order = np.argsort(-chars, kind="stable")
        with counting(self.progress and n >= 256, "scoring", n, transient=True) as tick:
            for start in range(0, n, _CHUNK):
                idx = order[start : start + _CHUNK]
                enc = self.encoder.encode([queries[i] for i in idx], [documents[i] for i in idx])
                logits[idx] = run_encoded(
                    self.backend,
                    enc.tensors(),
                    enc.lengths,
                    token_budget=self._token_budget,
                    max_batch_size=self._max_batch_size,
                    pad_values={"input_ids": self.encoder.pad_id},
                    on_batch=tick,
                )
                truncated[idx] = enc.truncated
                tokens[idx] = enc.lengths
        return ScoredPairs(logits, truncated, tokens)


def _labels(config: Mapping[str, Any], num_labels: int) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels))


def _default_activation(files: ModelFiles, num_labels: int) -> Activation:
    saved = files.settings.get("activation")
    if saved in ("sigmoid", "softmax", "none"):
        return saved  # type: ignore[no-any-return]
    st = files.config.get("sentence_transformers", {}) or {}
    fn = str(st.get("activation_fn", files.config.get("sbert_ce_default_activation_function", "")))
    if fn.endswith("Identity"):
        return "none"
    if fn.endswith("Sigmoid"):
        return "sigmoid"
    return "sigmoid" if num_labels == 1 else "softmax"
