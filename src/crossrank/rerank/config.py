"""Settings of a cross-encoder: truncation, activation, batching and long documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from crossrank.errors import ConfigError

__all__ = ["Activation", "ScoringConfig"]

Activation = Literal["sigmoid", "softmax", "none", "calibrated"]
_ACTIVATIONS = ("sigmoid", "softmax", "none", "calibrated")


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """How a :class:`~crossrank.CrossEncoder` turns pairs into scores.

    Attributes:
        max_length: most tokens per pair (query + document + special tokens); ``None`` takes
            the model's own limit. The query is kept whole and the document is cut.
        activation: ``"sigmoid"``, ``"softmax"``, ``"none"`` (raw logits) or ``"calibrated"``
            (probabilities of relevance from the model's calibration, see ``crossrank calibrate``),
            applied in fp32; ``None`` takes the model's default (calibrated when a calibration is
            loaded, else sigmoid for one logit, softmax for several).
        relevance_label: for multi-label heads, the label (name from ``config.id2label`` or
            index) that ``rerank`` orders by, e.g. ``"entailment"``.
        token_budget: most padded tokens in one forward pass; batches are sized by it.
        max_batch_size: most pairs in one forward pass.
        long_documents: ``"truncate"`` cuts documents to fit, ``"window"`` scores overlapping
            windows and aggregates them.
        window_stride: tokens between window starts; ``None`` is half a window.
        window_aggregate: how window scores make a document score: ``"max"``, ``"first"``, ``"mean"``.
        threads: intra-op threads; ``None`` uses every core this process may use.
        instances: engine instances (ONNX Runtime sessions) that run batches side by side, the
            cores split between them. ``None``: one single-threaded session per core, up to 8
            (on 2 AVX2 cores two one-thread sessions scored 1.13x one two-thread session,
            bench/rerank_speed.py). OpenVINO sizes its own streams.
        precision: OpenVINO's precision for non-quantized ops: ``"auto"`` (bf16 on CPUs with native
            bf16, else fp32), ``"fp32"`` or ``"bf16"``. For decoder and T5 rerankers (torch), the
            weights' dtype: ``"auto"`` is bf16 on a CPU with native bf16 (AVX-512 bf16 or AMX), else
            fp32, and bf16 (fp16 where bf16 is unsupported) on a GPU; ``"fp16"`` too. Scores are
            computed in fp32 from the last hidden state either way.
        device: where decoder and T5 rerankers run (torch): ``"cpu"`` (the default), ``"cuda"``,
            ``"cuda:1"``, ``"mps"``.
        cache_size: how many (query, document) scores to keep in an in-memory LRU cache; 0 is off.
        cache_dir: a folder for a persistent score cache (SQLite) shared across runs; ``None`` is off.
        prefix_reuse: decoder rerankers compute the prompt head a query's pairs share (template,
            instruction, query) once and run only each document's tokens against it.
    """

    max_length: int | None = None
    activation: Activation | None = None
    relevance_label: str | int | None = None
    token_budget: int = 8192
    max_batch_size: int = 16
    long_documents: Literal["truncate", "window"] = "truncate"
    window_stride: int | None = None
    window_aggregate: Literal["max", "first", "mean"] = "max"
    threads: int | None = None
    instances: int | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cache_size: int = 0
    cache_dir: str | None = None
    prefix_reuse: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if self.max_length is not None and not 8 <= self.max_length <= 32768:
            raise ConfigError(f"max_length must be in [8, 32768] (got {self.max_length})")
        if self.activation is not None and self.activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be one of {_ACTIVATIONS} or None (got {self.activation!r})")
        if self.token_budget < 64:
            raise ConfigError(f"token_budget must be >= 64 (got {self.token_budget})")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1 (got {self.max_batch_size})")
        if self.long_documents not in ("truncate", "window"):
            raise ConfigError(f"long_documents must be 'truncate' or 'window' (got {self.long_documents!r})")
        if self.window_stride is not None and self.window_stride < 1:
            raise ConfigError(f"window_stride must be >= 1 (got {self.window_stride})")
        if self.window_aggregate not in ("max", "first", "mean"):
            raise ConfigError(f"window_aggregate must be 'max', 'first' or 'mean' (got {self.window_aggregate!r})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")
        if self.instances is not None and self.instances < 1:
            raise ConfigError(f"instances must be >= 1 (got {self.instances})")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16' (got {self.precision!r})")
        if self.device is not None and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps' (got {self.device!r})")
        if self.cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0 (got {self.cache_size})")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringConfig:
        """Return the config described by ``data``, rejecting unknown keys.

        Raises:
            ConfigError: a key is unknown or a value is not allowed.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown scoring settings {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)
