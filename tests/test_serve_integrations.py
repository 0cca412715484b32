"""The request shapes of other search stacks, built as those stacks build them, against a real server.

- Weaviate's reranker-transformers module: the body of `RankInput` in weaviate/weaviate
  `modules/reranker-transformers/clients/ranker.go` (query, documents, and `property` marshalled as
  ""), sent 32 documents at a time, its answer read as `RankResponse` (`scores[].document/score` in
  the order sent, `error` on a non-200); readiness at `/.well-known/ready`, metadata at `/meta`.
- vLLM's score API: `ScoreRequest` of vllm `entrypoints/openai/protocol.py` (`text_1`/`text_2`, a
  string or a list each; `queries`/`documents` as the other spelling), answered as its
  `ScoreResponse` (`data[].index/score` in input order, `usage`).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from crossrank import CrossEncoder
from crossrank.serve import create_app
from test_serve import HTTP_TIMEOUT, dl19_candidates, serving


@pytest.fixture(scope="module")
def url(default_model: CrossEncoder) -> Iterator[str]:
    with serving(create_app(default_model)) as base:
        yield base


def test_weaviate_module_requests_get_the_librarys_scores_in_the_order_sent(
    url: str, default_model: CrossEncoder
) -> None:
    query, docs = dl19_candidates(1, 40)[0]
    base = f"{url}/weaviate"  # what RERANKER_INFERENCE_API is set to
    assert httpx.get(f"{base}/.well-known/ready", timeout=HTTP_TIMEOUT).status_code == 204
    assert httpx.get(f"{base}/.well-known/live", timeout=HTTP_TIMEOUT).status_code == 204
    meta = httpx.get(f"{base}/meta", timeout=HTTP_TIMEOUT)
    assert meta.status_code == 200 and meta.json()["model"]["name"] == default_model.name
    got: list[dict] = []
    for start in range(0, len(docs), 32):  # the module's client sends 32 documents per request
        body = {"query": query, "documents": docs[start : start + 32], "property": ""}
        answer = httpx.post(f"{base}/rerank", json=body, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 200
        assert answer.json()["query"] == query
        got.extend(answer.json()["scores"])
    want = default_model.score([(query, d) for d in docs])
    assert [g["document"] for g in got] == docs
    assert [g["score"] for g in got] == pytest.approx(want.tolist(), abs=1e-6)
    single = httpx.post(f"{base}/rerank", json={"query": query, "property": docs[0]}, timeout=HTTP_TIMEOUT).json()
    assert single["property"] == docs[0] and single["score"] == pytest.approx(float(want[0]), abs=1e-6)


def test_weaviate_errors_come_back_in_the_modules_error_field(url: str) -> None:
    bad = httpx.post(f"{url}/weaviate/rerank", json={"query": "q", "documents": ["ok", ""]}, timeout=HTTP_TIMEOUT)
    assert bad.status_code == 400
    assert set(bad.json()) == {"error"} and "documents" in bad.json()["error"]
    none = httpx.post(f"{url}/weaviate/rerank", json={"query": "q"}, timeout=HTTP_TIMEOUT)
    assert none.status_code == 400 and "send `documents`" in none.json()["error"]


@pytest.mark.parametrize("path", ["/score", "/vllm/score", "/vllm/v1/score"])
def test_vllm_score_requests_in_both_spellings(url: str, default_model: CrossEncoder, path: str) -> None:
    query, docs = dl19_candidates(1, 5)[0]
    want = default_model.score([(query, d) for d in docs]).tolist()
    for body in (
        {"model": "any", "text_1": query, "text_2": docs},
        {"model": "any", "queries": query, "documents": docs},
        {"model": "any", "text_1": [query] * len(docs), "text_2": docs},
    ):
        answer = httpx.post(f"{url}{path}", json=body, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert out["object"] == "list" and out["model"] == default_model.name and out["id"].startswith("score-")
        assert [d["index"] for d in out["data"]] == list(range(len(docs)))
        assert all(d["object"] == "score" for d in out["data"])
        assert [d["score"] for d in out["data"]] == pytest.approx(want, abs=1e-6)
        assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"] > 0
    pair = httpx.post(f"{url}{path}", json={"text_1": query, "text_2": docs[0]}, timeout=HTTP_TIMEOUT).json()
    assert [d["score"] for d in pair["data"]] == pytest.approx(want[:1], abs=1e-6)


def test_vllm_errors_come_back_as_vllm_error_objects(url: str) -> None:
    bad = httpx.post(f"{url}/score", json={"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, timeout=HTTP_TIMEOUT)
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["code"] == 400 and err["type"] == "BadRequestError" and "text_1" in err["message"]
    missing = httpx.post(f"{url}/score", json={"text_1": "a"}, timeout=HTTP_TIMEOUT)
    assert missing.status_code == 400 and "send `text_1` and `text_2`" in missing.json()["error"]["message"]
    # crossrank's own /v1/score keeps its own shape
    own = httpx.post(f"{url}/v1/score", json={"pairs": [["a question", "an answer"]]}, timeout=HTTP_TIMEOUT)
    assert own.status_code == 200 and "scores" in own.json()
