"""The index's typed values: IndexConfig checks itself and round-trips; Manifest writes the bytes it read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.errors import ConfigError, CrossrankError, IndexStateError, InputError
from crossrank.retrieve.bm25 import BM25Settings
from crossrank.retrieve.index import Index, IndexError_
from crossrank.retrieve.manifest import IndexConfig, Manifest

DOCS = [{"id": f"d{i}", "title": f"t{i}", "text": f"text {i} about cats and dogs"} for i in range(20)]


def test_config_round_trips_and_checks_itself() -> None:
    cfg = IndexConfig(
        retriever="hybrid", bm25=BM25Settings(k1=1.2, stemmer=None), dense_model=Path("models/x"), dtype="int8",
        ann="hnsw", fusion="interpolate", rrf_k=10, dense_weight=0.3, on_error="skip", chunk_size=64,
    )  # fmt: skip
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data and data["dense_model"] == "models/x"
    assert IndexConfig.from_dict(data) == cfg.replace(dense_model="models/x")
    assert IndexConfig.from_dict(IndexConfig().to_dict()) == IndexConfig()
    for bad, match in [
        ({"retriever": "splade"}, "retriever must be one of"),
        ({"dtype": "float16"}, "dtype"),
        ({"ann": "ivf"}, "ann"),
        ({"fusion": "max"}, "fusion"),
        ({"dense_weight": 1.5}, "dense_weight"),
        ({"rrf_k": 0}, "rrf_k must be a whole number >= 1"),
        ({"chunk_size": True}, "chunk_size"),
        ({"bm25": {"k1": 1.0}}, "BM25Settings"),
    ]:
        with pytest.raises(ConfigError, match=match):
            IndexConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown index setting 'retreiver'"):
        IndexConfig.from_kwargs({"retreiver": "bm25"})


def test_build_takes_a_config_or_its_fields(tmp_path: Path) -> None:
    by_config = Index.build(tmp_path / "a", DOCS, IndexConfig(fusion="interpolate"))
    by_kwargs = Index.build(tmp_path / "b", DOCS, fusion="interpolate")
    assert by_config.manifest.fusion == by_kwargs.manifest.fusion == {
        "method": "interpolate", "rrf_k": 60, "dense_weight": 0.5,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="not both"):
        Index.build(tmp_path / "c", DOCS, IndexConfig(), retriever="bm25")
    with pytest.raises(ConfigError, match="unknown index setting"):
        Index.build(tmp_path / "c", DOCS, retreiver="bm25")


def test_manifest_writes_the_bytes_it_read(tmp_path: Path) -> None:
    index = Index.build(tmp_path / "idx", DOCS)
    index.add([{"id": "new", "text": "zeppelin"}])
    index.delete(["d3"])
    raw = (tmp_path / "idx" / index.generation / "manifest.json").read_text(encoding="utf-8")
    manifest = Manifest.from_dict(json.loads(raw))
    assert json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) == raw
    assert manifest == index.manifest and manifest.documents == 20 and len(manifest.segments) == 2
    assert manifest["segments"][1]["count"] == 1  # reads as the dict it used to be
    extra = Manifest.from_dict({**json.loads(raw), "future": {"x": 1}})
    assert extra.to_dict()["future"] == {"x": 1}
    with pytest.raises(KeyError):
        manifest["nope"]


def test_index_state_error_is_named_and_keeps_its_old_name(tmp_path: Path) -> None:
    assert IndexError_ is IndexStateError
    assert issubclass(IndexStateError, CrossrankError) and issubclass(IndexStateError, ValueError)
    assert issubclass(IndexStateError, InputError)
    with pytest.raises(IndexStateError, match="does not exist"):
        Index.open(tmp_path / "none")
