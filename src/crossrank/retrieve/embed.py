"""Bi-encoders: turn queries and documents into vectors for dense retrieval.

Any Hugging Face or sentence-transformers bi-encoder works: its pooling (CLS, mean, max, last
token), normalisation and query/document prompts are read from the sentence-transformers files
beside the model (``modules.json``, ``1_Pooling/config.json``, ``config_sentence_transformers.json``,
``sentence_bert_config.json``), and can be overridden.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.engine import Backend, check_backend_name, choose_backend, load_backend, plan_batches, run_parallel
from crossrank.errors import ConfigError, InputError, ModelError
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles, resolve
from crossrank.models.tokenizer import load_tokenizer, model_max_length, pad_id

__all__ = ["BiEncoder", "EmbeddingSettings"]

log = logging.getLogger(__name__)

Pooling = Literal["cls", "mean", "max", "lasttoken"]
_POOLINGS = ("cls", "mean", "max", "lasttoken")
_BUCKET = 16


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """How a bi-encoder turns token vectors into one vector per text.

    Attributes:
        pooling: ``"cls"`` (first token), ``"mean"`` (of real tokens), ``"max"`` or ``"lasttoken"``.
        normalize: scale vectors to unit length (then dot product = cosine).
        query_prompt: text put before each query (e.g. BGE's instruction).
        document_prompt: text put before each document.
        max_length: most tokens per text; longer texts are truncated and counted.
    """

    pooling: Pooling = "mean"
    normalize: bool = True
    query_prompt: str = ""
    document_prompt: str = ""
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.pooling not in _POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(_POOLINGS)} (got {self.pooling!r})")
        if self.max_length < 4:
            raise ConfigError(f"max_length must be >= 4 (got {self.max_length})")


class BiEncoder:
    """A bi-encoder (embedding model) for dense retrieval.

    Args:
        model: a built-in name (``"bge-small-en"``, the dense default, or ``"all-MiniLM-L6-v2"``), a
            local Hugging Face / sentence-transformers folder, an ONNX folder or file, or a hub id.
        backend: ``"openvino"`` (built-ins run a static int8 graph calibrated once, about a minute,
            into crossrank's cache; a folder needs an OpenVINO IR or ONNX graph), ``"onnx"`` (ONNX
            Runtime; built-ins run their fused fp32 graph), ``"torch"`` (transformers, fp32), or
            ``"auto"``: OpenVINO for built-ins and IRs when it is installed, else ONNX when the model
            has a graph, else torch. Every backend gives a text the same vector whatever its batch-mates.
        pooling, normalize, query_prompt, document_prompt, max_length: override what the model's
            files say (see :class:`EmbeddingSettings`).
        token_budget: most padded tokens per batch.
        threads: inference threads; defaults to the cores this process may use.

    Example:
        >>> enc = BiEncoder("bge-small-en")  # doctest: +SKIP
        >>> enc.encode_queries(["what is a cat"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "bge-small-en",
        *,
        backend: Literal["auto", "openvino", "onnx", "torch"] = "auto",
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        max_length: int | None = None,
        token_budget: int = 8192,
        max_batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        check_backend_name(backend)
        self.files: ModelFiles = resolve(model)
        builtin = lookup(self.files.builtin) if self.files.builtin else None
        if builtin is not None and builtin.kind != "bi-encoder":
            raise ConfigError(
                f"{self.files.name!r} is a cross-encoder, not a bi-encoder; dense retrieval needs an embedding "
                "model such as 'bge-small-en'"
            )
        base = EmbeddingSettings(**builtin.embedding) if builtin is not None else _read_st_settings(self.files)
        model_max = model_max_length(self.files.config, default=base.max_length)
        overrides: dict[str, Any] = {
            k: v
            for k, v in {
                "pooling": pooling,
                "normalize": normalize,
                "query_prompt": query_prompt,
                "document_prompt": document_prompt,
                "max_length": max_length,
            }.items()
            if v is not None
        }
        settings = replace(base, **overrides)
        self.settings = replace(settings, max_length=min(settings.max_length, model_max))
        self.backend_name = choose_backend(self.files, backend)[0]
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        self._tok = load_tokenizer(self.files.tokenizer_file)
        self._tok.no_padding()
        self._tok.enable_truncation(self.settings.max_length)
        self._pad_id = pad_id(self._tok)
        self.backend: Backend = load_backend(
            self.files, task="feature-extraction", backend=self.backend_name, threads=threads
        )
        self.model_file = getattr(self.backend, "model_file", None)
        self.parallelism = int(getattr(self.backend, "parallelism", 1))
        self.dim = int(self.backend.num_labels)  # the output's last axis: the vector size
        self.num_truncated = 0

    def __repr__(self) -> str:
        return f"BiEncoder({self.files.name!r}, backend={self.backend_name!r}, dim={self.dim}, {self.settings})"

    @property
    def name(self) -> str:
        """Return the name the model was loaded by."""
        return self.files.name

    def fingerprint(self) -> dict[str, Any]:
        """Return what identifies this model's vectors: name, weights digest, settings, dimension.

        An index records this; opening it with a model whose fingerprint differs is refused.
        """
        weights = self.files.onnx_file if self.backend_name in ("onnx", "openvino") else None
        if weights is None:
            weights = next(
                (
                    self.files.folder / w
                    for w in ("model.safetensors", "pytorch_model.bin")
                    if (self.files.folder / w).is_file()
                ),
                None,
            )
        return {
            "model": self.files.builtin or self.files.name,
            "weights_sha256": _sha256_head(weights) if weights is not None else None,
            "backend": self.backend_name,
            "dim": self.dim,
            **asdict(self.settings),
        }

    # ---------------------------------------------------------------- encoding

    def encode_queries(
        self, queries: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Return one float32 vector per query, ``(n, dim)``, with the query prompt applied."""
        return self._encode(queries, self.settings.query_prompt, on_batch)

    def encode_documents(
        self, documents: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Return one float32 vector per document, ``(n, dim)``, with the document prompt applied."""
        return self._encode(documents, self.settings.document_prompt, on_batch)

    def _encode(
        self, texts: Sequence[str], prompt: str, on_batch: Callable[[int], None] | None
    ) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise InputError("pass a list of texts, not one string")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise InputError(f"text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string")
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        cut = self.settings.max_length * 24  # a huge text costs no more than a long one
        items = [prompt + t[:cut] for t in texts] if prompt else [t[:cut] for t in texts]
        encs = self._tok.encode_batch(items)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int32, count=n)
        truncated = sum(1 for e in encs if e.overflowing)
        if truncated:
            self.num_truncated += truncated
            log.info("%d of %d texts were longer than %d tokens and truncated", truncated, n, self.settings.max_length)

        def run_one(idx: npt.NDArray[np.intp]) -> None:
            width = -(-int(lengths[idx].max()) // _BUCKET) * _BUCKET
            ids = np.full((idx.size, width), self._pad_id, dtype=np.int64)
            mask = np.zeros((idx.size, width), dtype=np.int64)
            for row, i in enumerate(idx.tolist()):
                e = encs[i]
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[idx] = self._pool(self.backend.run(feed), mask)
            if on_batch is not None:
                on_batch(idx.size)

        batches = plan_batches(
            lengths, token_budget=self.token_budget, max_batch_size=self.max_batch_size, parallelism=self.parallelism
        )
        if self.parallelism <= 1:
            for idx in batches:
                run_one(idx)
        else:  # several infer requests in flight; OpenVINO releases the GIL while it computes
            run_parallel(run_one, batches, workers=self.parallelism, name="crossrank-embed")
        if self.settings.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _pool(self, hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        if hidden.ndim == 2:  # the graph already pools (a sentence-transformers ONNX export)
            return hidden
        pooling = self.settings.pooling
        if pooling == "cls":
            return hidden[:, 0]
        m = mask[:, :, None].astype(np.float32)
        if pooling == "mean":
            pooled: npt.NDArray[np.float32] = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
            return pooled
        if pooling == "max":
            maxed: npt.NDArray[np.float32] = np.where(m > 0, hidden, -np.inf).max(axis=1).astype(np.float32)
            return maxed
        last = mask.sum(axis=1) - 1  # lasttoken: right padding, so the last real token
        lasts: npt.NDArray[np.float32] = hidden[np.arange(hidden.shape[0]), last]
        return lasts


def _read_st_settings(files: ModelFiles) -> EmbeddingSettings:
    """Return the pooling, normalisation, prompts and length that the sentence-transformers files say."""
    folder = files.folder
    pooling: Pooling = "mean"
    normalize = False
    modules = _json(folder / "modules.json")
    if isinstance(modules, list):
        for mod in modules:
            kind = str(mod.get("type", ""))
            if kind.endswith("Pooling"):
                cfg = _json(folder / str(mod.get("path", "")) / "config.json") or {}
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    pooling = "max"
                elif cfg.get("pooling_mode_lasttoken"):
                    pooling = "lasttoken"
                else:
                    pooling = "mean"
            elif kind.endswith("Normalize"):
                normalize = True
    else:  # a plain Hugging Face encoder: mean pooling, unit vectors (the common choice)
        normalize = True
    st = _json(folder / "config_sentence_transformers.json") or {}
    prompts = st.get("prompts") or {}
    query_prompt = str(prompts.get("query", "") or "")
    document_prompt = str(next((prompts[k] for k in ("document", "passage", "corpus") if prompts.get(k)), ""))
    sb = _json(folder / "sentence_bert_config.json") or {}
    max_length = int(sb.get("max_seq_length") or files.config.get("max_position_embeddings") or 512)
    return EmbeddingSettings(pooling, normalize, query_prompt, document_prompt, max_length)


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); restore it from the model's source") from err


def _sha256_head(path: Path) -> str:
    """Return a digest of the file's size and first and last MiB (cheap, and changes with the weights)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()
