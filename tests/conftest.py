"""Shared fixtures: real data from ../shared/data, the real default model, tiny local models."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CROSSRANK_SHARED", ROOT.parent / "shared")) / "data"
DL19 = SHARED / "trec-dl-2019-passage"


def pytest_configure(config: pytest.Config) -> None:
    # Keep the optimized-graph cache inside the test session unless the caller set one.
    os.environ.setdefault("CROSSRANK_CACHE", str(ROOT / ".cache" / "crossrank"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    # the engine `auto` picks must not change in the middle of a session (see test_first_minutes.py)
    os.environ.setdefault("CROSSRANK_BACKGROUND_BUILD", "0")
    # The Ray tests' cluster runs with token authentication; Ray reads the mode when it is imported.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


@pytest.fixture(scope="session")
def dl19() -> Path:
    if not DL19.is_dir():
        pytest.fail(f"shared data not found at {DL19}; set CROSSRANK_SHARED to the folder holding data/")
    return DL19


@pytest.fixture(scope="session")
def default_model():  # type: ignore[no-untyped-def]
    from crossrank import CrossEncoder

    return CrossEncoder("default")


@pytest.fixture(scope="session")
def fp32_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.models.convert import convert_builtin

    return convert_builtin("default", tmp_path_factory.mktemp("convert") / "minilm-fp32")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny"))


def beir(name: str) -> Path:
    folder = SHARED / name
    if not folder.is_dir():
        pytest.fail(f"shared data not found at {folder}; set CROSSRANK_SHARED to the folder holding data/")
    return folder


@pytest.fixture(scope="session")
def cisi_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 documents of CISI as a JSONL corpus (real text, small enough to embed quickly)."""
    src = beir("cisi") / "corpus.jsonl"
    out = tmp_path_factory.mktemp("cisi") / "corpus.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()[:300]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def remembering_encoder():  # type: ignore[no-untyped-def]
    """The default dense model (bge-small-en, the engine ``auto`` picks), embedding each text once.

    Its vectors are the real model's: it runs the model on texts it has not seen and hands back the
    stored vector of a text it has. The index tests build the same CISI slice again and again, to
    compare an index after adds, deletes and compactions with a fresh build; they test the index,
    and embedding those 300 documents once is enough.
    """
    import numpy as np

    from crossrank.retrieve.embed import BiEncoder

    class RememberingBiEncoder(BiEncoder):
        def __init__(self) -> None:
            super().__init__("bge-small-en")
            self._seen: dict[str, np.ndarray] = {}

        def encode_documents(self, documents, *, on_batch=None):  # type: ignore[no-untyped-def,override]
            new = [t for t in dict.fromkeys(documents) if t not in self._seen]
            if new:
                self._seen.update(zip(new, super().encode_documents(new), strict=True))
            if on_batch is not None:
                on_batch(len(documents))
            if not documents:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._seen[t] for t in documents])

    return RememberingBiEncoder()


@pytest.fixture(scope="session")
def hybrid_index(cisi_slice: Path, tmp_path_factory: pytest.TempPathFactory, remembering_encoder):  # type: ignore[no-untyped-def]
    from crossrank.retrieve.index import Index

    return Index.build(
        tmp_path_factory.mktemp("idx") / "hybrid", cisi_slice, retriever="hybrid", dense_model=remembering_encoder
    )
