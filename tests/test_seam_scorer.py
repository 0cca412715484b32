"""A new model family, written in this one file, runs through rerank, the pipeline and the server.

The family scores a pair by the longest run of characters the query and the document share: a toy,
but a real plug-in. It is found from its model folder's config (``architectures``), registered
here, and nothing under ``src/`` knows it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossrank import CrossEncoder, Index, Pipeline, ScoringConfig
from crossrank.errors import ConfigError
from crossrank.models.source import resolve
from crossrank.ranking import ScoredPairs, rank_order
from crossrank.rerank.scorer import FAMILIES, Scorer, family_of, register_family
from crossrank.rerank.testing import FakeScorer
from crossrank.serve import create_app
from test_serve import serving

DOCS = [
    {"id": "d0", "title": "", "text": "Paris is the capital of France."},
    {"id": "d1", "title": "Cats", "text": "A cat is a small domesticated carnivorous mammal."},
    {"id": "d2", "title": "", "text": "The cat sat on the mat."},
    {"id": "d3", "title": "", "text": "Dogs are loyal companions."},
]


class LongestCommonSubstring:
    """Score = length of the longest common substring of the lower-cased query and document."""

    labels = ("relevance",)

    def __init__(self, name: str = "lcs") -> None:
        self.name = name
        self.default_activation = "none"

    @classmethod
    def from_files(cls, files: Any, *, backend: str, config: ScoringConfig, progress: bool, reason: str) -> Any:
        return cls(files.name)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> ScoredPairs:
        lengths = []
        for q, d in zip(queries, documents, strict=True):
            a, b = q.lower(), d.lower()
            lengths.append(SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size)
        n = len(queries)
        return ScoredPairs(np.asarray(lengths, np.float32), np.zeros(n, bool), np.full(n, 1, np.int32))


@pytest.fixture(scope="module")
def lcs_folder(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Path:
    """A model folder of the toy family: a config naming its architecture, a tokenizer, weights."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("lcs-model")
    (folder / "config.json").write_text(json.dumps({"architectures": ["LongestCommonSubstringRanker"]}))
    shutil.copy(next(iter(tiny_models.values())) / "tokenizer.json", folder / "tokenizer.json")
    save_file({"unused": np.zeros(1, np.float32)}, str(folder / "model.safetensors"))
    register_family(
        "longest-common-substring",
        LongestCommonSubstring,
        detect=lambda files: "LongestCommonSubstringRanker" in (files.config.get("architectures") or []),
    )
    yield folder
    FAMILIES.pop("longest-common-substring")


def test_the_family_is_read_from_the_config_and_reranks(lcs_folder: Path) -> None:
    assert family_of(resolve(lcs_folder)) == "longest-common-substring"
    ce = CrossEncoder(lcs_folder)
    assert isinstance(ce.scorer, LongestCommonSubstring) and isinstance(ce.scorer, Scorer)
    ranking = ce.rerank("the cat sat", [d["text"] for d in DOCS])
    assert ranking.doc_ids()[0] == "2"  # "the cat sat" is in d2 whole
    assert [h.score for h in ranking.hits] == sorted((h.score for h in ranking.hits), reverse=True)
    assert ranking.hits[0].score == len("the cat sat")  # activation "none": the family's raw score


def test_a_family_runs_under_the_pipeline(lcs_folder: Path, tmp_path: Path) -> None:
    index = Index.build(tmp_path / "index", DOCS)
    result = Pipeline(index, reranker=CrossEncoder(lcs_folder)).search("cat sat on the mat", k=2, depth=4)
    assert result.doc_ids() == ["d2", "d1"]


def test_a_family_is_served_over_http(lcs_folder: Path) -> None:
    texts = [d["text"] for d in DOCS]
    with serving(create_app(CrossEncoder(lcs_folder))) as base:
        got = httpx.post(f"{base}/v1/rerank", json={"query": "the cat sat", "documents": texts}, timeout=30).json()
    library = CrossEncoder(lcs_folder).rerank("the cat sat", texts)
    assert [r["index"] for r in got["results"]] == [h.index for h in library.hits]
    assert [r["relevance_score"] for r in got["results"]] == [h.score for h in library.hits]


def test_an_unscorable_architecture_says_which(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    folder = tmp_path / "decoder"
    shutil.copytree(next(iter(tiny_models.values())), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["MysteryForMaskedLM"]}))
    (folder / "crossrank.json").write_text(json.dumps({"family": "no-such-family"}))
    with pytest.raises(ConfigError, match=r"no-such-family.*known families"):
        CrossEncoder(folder, backend="torch")
    (folder / "crossrank.json").unlink()
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["MysteryForMaskedLM"]}))
    with pytest.raises(ConfigError, match=r"is a MysteryForMaskedLM, which no crossrank family scores; supported"):
        CrossEncoder(folder, backend="torch")
    # a causal LM is a family now, and one whose files name no template says how to give one
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    with pytest.raises(ConfigError, match=r"needs a prompt template: pass template="):
        CrossEncoder(folder, backend="torch")


def test_the_fake_scorer_stands_in_for_a_model() -> None:
    fake = FakeScorer()
    ce = CrossEncoder(fake)
    ranking = ce.rerank("black cat", ["a dog", "the black cat sat", "a cat"])
    assert ranking.doc_ids() == ["1", "2", "0"]
    assert fake.calls == 1 and fake.pairs == 3
    assert ce.score([("black cat", "a black cat")])[0] == pytest.approx(1 / (1 + np.exp(-1.5)))
    with pytest.raises(ConfigError, match="window"):
        CrossEncoder(FakeScorer(), config=ScoringConfig(long_documents="window"))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-3, 3)), max_size=40), st.integers(1, 5))
def test_grouped_ranking_is_the_rule_applied_to_each_group(rows: list[tuple[int, int]], k: int) -> None:
    groups = [g for g, _ in rows]
    keys = [float(v) for _, v in rows]
    got = rank_order(keys, k, groups=groups).tolist()
    want: list[int] = []
    for g in dict.fromkeys(groups):  # groups in order of first appearance
        members = [i for i, gg in enumerate(groups) if gg == g]
        want.extend(members[j] for j in rank_order([keys[i] for i in members], k).tolist())
    assert got == want
