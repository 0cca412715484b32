"""The index's typed values: what a generation's ``manifest.json`` says, and how an index is built.

:class:`Manifest` is the manifest as a frozen value. ``Manifest.from_dict(d).to_dict() == d``
for every manifest crossrank writes, keys in the same order, so a manifest written from it is
byte for byte the one earlier versions wrote and existing index folders keep opening.
:class:`IndexConfig` holds the settings of :meth:`Index.build <crossrank.retrieve.index.Index.build>`
and checks them when it is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crossrank.errors import ConfigError
from crossrank.retrieve.bm25 import BM25Settings

if TYPE_CHECKING:
    from crossrank.retrieve.corpus import OnError
    from crossrank.retrieve.embed import BiEncoder
    from crossrank.retrieve.vectors import VectorDtype

__all__ = ["Counts", "IndexConfig", "Manifest", "Retriever", "SegmentInfo"]

Retriever = Literal["bm25", "dense", "hybrid"]
RETRIEVERS: tuple[Retriever, ...] = ("bm25", "dense", "hybrid")
FUSIONS = ("rrf", "interpolate")


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment as a manifest lists it: a folder of immutable documents.

    Attributes:
        name: the folder under ``segments/`` (``seg-NNNNNN``).
        start: the slot of its first row; segments follow each other.
        count: its rows (live or not).
        hnsw: whether it has an HNSW graph (else dense search is exact).
    """

    name: str
    start: int
    count: int
    hnsw: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the segment as the manifest writes it."""
        return {"name": self.name, "start": self.start, "count": self.count, "hnsw": self.hnsw}


@dataclass(frozen=True, slots=True)
class Counts:
    """A generation's counts: live documents, slots (rows of all segments), dead rows, segments, BM25 terms."""

    documents: int
    slots: int
    deleted: int
    segments: int
    bm25_terms: int = 0

    def to_dict(self) -> dict[str, int]:
        """Return the counts as the manifest writes them."""
        return {
            "documents": self.documents,
            "slots": self.slots,
            "deleted": self.deleted,
            "segments": self.segments,
            "bm25_terms": self.bm25_terms,
        }


_KEYS = (
    "format", "retriever", "bm25", "dense", "fusion", "segments", "created", "generation", "updated", "counts",
    "versions",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Manifest:
    """A generation's ``manifest.json``: what the index holds and how it was built.

    The nested settings (``bm25``, ``dense``, ``fusion``) stay the JSON objects they are on disk;
    a field that a manifest being built does not have yet is ``None`` and is not written.

    Attributes:
        format: the on-disk format version.
        retriever: the first stage the index was built for.
        bm25: the BM25 settings (:meth:`BM25Settings.to_dict`), or ``None`` without BM25.
        dense: the dense model's fingerprint, source, backend, vector dtype and ANN settings, or ``None``.
        fusion: hybrid fusion: ``method``, ``rrf_k``, ``dense_weight``.
        segments: the segments, in slot order.
        created: when the index was first built (UTC, ISO 8601).
        generation: the generation's folder name (``gen-NNNNNN``).
        updated: when this generation was written.
        counts: its counts.
        versions: the versions of Python and the libraries that wrote it.
        extra: fields this version does not know, kept as they were.
    """

    format: int
    retriever: Retriever
    bm25: Mapping[str, Any] | None
    dense: Mapping[str, Any] | None
    fusion: Mapping[str, Any]
    segments: tuple[SegmentInfo, ...] = ()
    created: str | None = None
    generation: str | None = None
    updated: str | None = None
    counts: Counts | None = None
    versions: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Return the manifest of a JSON object (as :func:`~crossrank.retrieve.index_files.read_manifest` checks it)."""
        counts = data.get("counts")
        return cls(
            format=int(data["format"]),
            retriever=data["retriever"],
            bm25=data.get("bm25"),
            dense=data.get("dense"),
            fusion=data["fusion"],
            segments=tuple(SegmentInfo(**s) for s in data.get("segments", ())),
            created=data.get("created"),
            generation=data.get("generation"),
            updated=data.get("updated"),
            counts=Counts(**counts) if counts is not None else None,
            versions=data.get("versions"),
            extra={k: v for k, v in data.items() if k not in _KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready values, keys in the order the file has always had them."""
        out: dict[str, Any] = {
            "format": self.format,
            "retriever": self.retriever,
            "bm25": _plain(self.bm25),
            "dense": _plain(self.dense),
            "fusion": _plain(self.fusion),
            "segments": [s.to_dict() for s in self.segments],
        }
        optional = {
            "created": self.created,
            "generation": self.generation,
            "updated": self.updated,
            "counts": self.counts.to_dict() if self.counts is not None else None,
            "versions": _plain(self.versions),
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(_plain(self.extra))
        return out

    def __getitem__(self, key: str) -> Any:
        """Return a field as the JSON object has it (``manifest["segments"][0]["hnsw"]``), as when it was a dict."""
        data = self.to_dict()
        if key not in data:
            raise KeyError(key)
        return data[key]

    @property
    def documents(self) -> int:
        """Return the live documents (0 before the first commit)."""
        return self.counts.documents if self.counts is not None else 0

    @property
    def slots(self) -> int:
        """Return the rows of all segments (0 before the first commit)."""
        return self.counts.slots if self.counts is not None else 0


def _plain(value: Any) -> Any:
    """Return ``value`` with every mapping a ``dict`` and every tuple a ``list`` (a deep copy of JSON data)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """How :meth:`Index.build <crossrank.retrieve.index.Index.build>` builds an index; checked when made.

    Attributes:
        retriever: which first stages to build: ``"bm25"``, ``"dense"`` or ``"hybrid"`` (both).
        bm25: BM25 parameters and analysis; ``None``: the defaults, which reproduce Anserini's BM25.
        dense_model: the bi-encoder (name, folder, hub id, or a loaded :class:`BiEncoder`).
        dtype: how vectors are stored: ``"float32"`` or ``"int8"`` (4x smaller).
        ann: ``"exact"`` search, ``"hnsw"`` graphs, or ``"auto"`` (HNSW from 50,000 vectors a segment).
        hnsw_connectivity, hnsw_expansion_add, hnsw_expansion_search: HNSW graph parameters.
        fusion: how ``"hybrid"`` merges the two lists: reciprocal rank fusion or score interpolation.
        rrf_k: the constant of reciprocal rank fusion.
        dense_weight: the dense share of interpolated scores (BM25 gets ``1 - dense_weight``).
        on_error: ``"raise"`` on a bad record, or ``"skip"`` it and count it in the report.
        chunk_size: documents read, stored and encoded at a time (bounds memory).

    Raises:
        ConfigError: a setting is not allowed.

    Example:
        >>> IndexConfig(retriever="hybrid", fusion="interpolate", dense_weight=0.3).to_dict()["dense_weight"]
        0.3
    """

    retriever: Retriever = "bm25"
    bm25: BM25Settings | None = None
    dense_model: str | os.PathLike[str] | BiEncoder = "bge-small-en"
    dtype: VectorDtype = "float32"
    ann: Literal["auto", "exact", "hnsw"] = "auto"
    hnsw_connectivity: int = 16
    hnsw_expansion_add: int = 128
    hnsw_expansion_search: int = 128
    fusion: Literal["rrf", "interpolate"] = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5
    on_error: OnError = "raise"
    chunk_size: int = 2048

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ConfigError(f"retriever must be one of {', '.join(RETRIEVERS)} (got {self.retriever!r})")
        if self.dtype not in ("float32", "int8"):
            raise ConfigError(f"dtype must be 'float32' or 'int8' (got {self.dtype!r})")
        if self.ann not in ("auto", "exact", "hnsw"):
            raise ConfigError(f"ann must be 'auto', 'exact' or 'hnsw' (got {self.ann!r})")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be 'rrf' or 'interpolate' (got {self.fusion!r})")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"dense_weight must be within [0, 1] (got {self.dense_weight})")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip' (got {self.on_error!r})")
        for name in ("hnsw_connectivity", "hnsw_expansion_add", "hnsw_expansion_search", "rrf_k", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1 (got {value!r})")
        if self.bm25 is not None and not isinstance(self.bm25, BM25Settings):
            raise ConfigError(f"bm25 must be a BM25Settings or None (got {type(self.bm25).__name__})")

    @classmethod
    def from_kwargs(cls, settings: Mapping[str, Any]) -> IndexConfig:
        """Return the config of :meth:`Index.build`'s keyword arguments; an unknown one is refused.

        Raises:
            ConfigError: an unknown setting, or a value that is not allowed.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown index setting {unknown[0]!r}; the settings are {', '.join(sorted(known))}")
        return cls(**settings)

    def replace(self, **changes: Any) -> IndexConfig:
        """Return a copy with ``changes`` (checked again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values (a loaded dense model as the name it was loaded from)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["bm25"] = self.bm25.to_dict() if self.bm25 is not None else None
        model = self.dense_model
        if isinstance(model, os.PathLike):
            out["dense_model"] = str(Path(model))
        elif not isinstance(model, str):
            out["dense_model"] = model.files.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexConfig:
        """Return the config of :meth:`to_dict`'s values.

        Raises:
            ConfigError: an unknown setting, or a value that is not allowed.
        """
        values = dict(data)
        if values.get("bm25") is not None:
            values["bm25"] = BM25Settings.from_dict(values["bm25"])
        return cls.from_kwargs(values)
