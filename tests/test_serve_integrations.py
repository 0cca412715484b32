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


# Elasticsearch's `custom` inference service (Elasticsearch docs, "Custom inference service", rerank
# task): the request template fills `${query}` with a JSON string and `${input}` with a JSON array of
# the documents; the response is read with its JSONPath subset.
ES_REQUEST = '{"documents": ${input}, "query": ${query}, "return_documents": false}'
ES_PARSER = {"reranked_index": "$.results[*].index", "relevance_score": "$.results[*].relevance_score"}

# OpenSearch ml-commons connector for Cohere rerank (ml-commons docs/remote_inference_blueprints,
# cohere_connector_rerank_blueprint.md, with the rerank processor's pre/post-process functions):
# `connector.pre_process.cohere.rerank` fills `documents` (a JSON array), `query` (escaped) and `top_n`
# (every document); `connector.post_process.cohere.rerank` puts each result's `relevance_score` at its
# `index`, giving one score per document in the order sent.
OPENSEARCH_REQUEST = (
    '{ "model": "${parameters.model}", "query" : "${parameters.query}", "documents" : ${parameters.documents},'
    ' "top_n" : ${parameters.top_n} }'
)


def json_path(value: object, path: str) -> list:
    """Evaluate the `$.a[*].b` paths Elasticsearch's custom service uses."""
    parts = path.removeprefix("$.").split(".")
    items = [value]
    for part in parts:
        name, star = (part[:-3], True) if part.endswith("[*]") else (part, False)
        items = [item[name] for item in items]  # type: ignore[index]
        if star:
            items = [x for item in items for x in item]  # type: ignore[union-attr]
    return items


def test_elasticsearch_custom_service_template_gets_the_librarys_order(url: str, default_model: CrossEncoder) -> None:
    import json

    query, docs = dl19_candidates(1, 12)[0]
    body = ES_REQUEST.replace("${input}", json.dumps(docs)).replace("${query}", json.dumps(query))
    answer = httpx.post(
        f"{url}/v2/rerank", content=body, headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    indices = json_path(answer.json(), ES_PARSER["reranked_index"])
    scores = json_path(answer.json(), ES_PARSER["relevance_score"])
    library = default_model.rerank(query, docs)
    assert indices == [h.index for h in library.hits]
    assert scores == pytest.approx([h.score for h in library.hits], abs=1e-6)


def test_opensearch_cohere_connector_template_gets_one_score_per_document(
    url: str, default_model: CrossEncoder
) -> None:
    import json

    query, docs = dl19_candidates(1, 12)[0]
    query = query + ' with a "quoted" word'  # the pre-process function escapes what the template quotes
    body = (
        OPENSEARCH_REQUEST.replace("${parameters.model}", "any")
        .replace("${parameters.query}", json.dumps(query)[1:-1])
        .replace("${parameters.documents}", json.dumps(docs))
        .replace("${parameters.top_n}", str(len(docs)))
    )
    answer = httpx.post(
        f"{url}/v1/rerank", content=body, headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    by_input = [0.0] * len(results)
    for result in results:  # what the post-process function does
        by_input[result["index"]] = result["relevance_score"]
    want = default_model.score([(query, d) for d in docs]).tolist()
    assert by_input == pytest.approx(want, abs=1e-6)
