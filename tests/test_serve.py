"""The HTTP service over a real loopback socket: shapes, scores, batching, backpressure, security, shutdown.

Servers run uvicorn in a thread of this process and share the session's real default model;
the graceful-shutdown test runs ``crossrank serve`` as a process and sends it SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, example, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# imported with this module, at collection: schemathesis imports these on its first schema, and
# Python 3.11.7's parser can fail to rewrite them ("AST constructor recursion depth mismatch") when
# that first import happens deep inside a long test session
from schemathesis.specs.openapi.schemas import OpenApiSchema  # noqa: F401

from crossrank import CrossEncoder
from crossrank.errors import ConfigError
from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run
from crossrank.serve import ApiKeys, ServeConfig, create_app, uvicorn_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "dl19"

# generous: a loaded CI machine can take seconds to answer; no test relies on a client default
HTTP_TIMEOUT = 120.0


# ---------------------------------------------------------------------- helpers


def dl19_candidates(n_queries: int, depth: int) -> list[tuple[str, list[str]]]:
    """Return (query, BM25 candidate passages) for the first queries of the shipped DL 2019 slice."""
    corpus = read_beir_corpus(EXAMPLES / "corpus.jsonl")
    queries = read_beir_queries(EXAMPLES / "queries.jsonl")
    run = read_trec_run(EXAMPLES / "bm25.top100.trec")
    out = []
    for qid in list(run)[:n_queries]:
        out.append((queries[qid], [corpus[d]["text"] for d, _ in run[qid][:depth]]))
    return out


def passages(n: int) -> list[str]:
    """Return ``n`` real passages (the shipped DL 2019 slice, in file order)."""
    corpus = read_beir_corpus(EXAMPLES / "corpus.jsonl")
    return [rec["text"] for rec in list(corpus.values())[:n]]


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", **uvicorn_settings: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of ``host`` in a thread; yield its base URL.

    uvicorn runs with the settings ``crossrank serve`` uses (:func:`uvicorn_config`), header
    deadline included; ``uvicorn_settings`` override them.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, timeout_graceful_shutdown=30, **uvicorn_settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def metric(text: str, name: str, **labels: str) -> float:
    """Return the value of one sample in Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    return 0.0


def library_ranking(
    ce: CrossEncoder, query: str, docs: list[str], activation: str | None = None
) -> list[tuple[int, float]]:
    """Return (index, score) best first, as the library ranks and scores them."""
    if activation is None:
        hits = ce.rerank(query, docs).hits
        return [(h.index, h.score) for h in hits]
    scores = ce.score([(query, d) for d in docs], activation=activation)  # type: ignore[arg-type]
    order = np.argsort(-scores, kind="stable")
    return [(int(i), float(scores[i])) for i in order]


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def dl19_index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from crossrank.retrieve.index import Index

    return Index.build(tmp_path_factory.mktemp("serve") / "bm25", EXAMPLES / "corpus.jsonl", retriever="bm25")


@pytest.fixture(scope="module")
def url(default_model: CrossEncoder) -> Iterator[str]:
    with serving(create_app(default_model)) as base:
        yield base


# ---------------------------------------------------------------------- shapes and scores


def test_v1_rerank_cohere_and_jina_shape_with_library_scores(url: str, default_model: CrossEncoder) -> None:
    query, docs = dl19_candidates(1, 12)[0]
    r = httpx.post(
        f"{url}/v1/rerank",
        json={"model": "rerank-v3.5", "query": query, "documents": docs, "top_n": 5},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"id", "model", "results", "meta", "usage"} and body["model"] == "default"
    want = library_ranking(default_model, query, docs)
    assert_same_ranking([(x["index"], x["relevance_score"]) for x in body["results"]], want[:5])
    assert all("document" not in x for x in body["results"])  # Cohere's default: no documents
    meta = body["meta"]
    assert meta["api_version"] == {"version": "1"} and meta["billed_units"] == {"search_units": 1}
    assert meta["crossrank"]["scores"] == "probability" and meta["crossrank"]["activation"] == "sigmoid"
    tokens = int(default_model.score_details([(query, d) for d in docs]).num_tokens.sum())
    assert meta["tokens"]["input_tokens"] == tokens == body["usage"]["total_tokens"]

    # Jina: objects with `text`, documents returned as given; raw logits on request
    objs = [{"text": d, "source": f"s{i}"} for i, d in enumerate(docs)]
    r = httpx.post(
        f"{url}/v1/rerank",
        json={"query": query, "documents": objs, "return_documents": True, "raw_scores": True},
        timeout=HTTP_TIMEOUT,
    )
    body = r.json()
    assert_same_ranking(
        [(x["index"], x["relevance_score"]) for x in body["results"]],
        library_ranking(default_model, query, docs, "none"),
    )
    assert [x["document"] for x in body["results"]] == [objs[x["index"]] for x in body["results"]]
    assert body["meta"]["crossrank"]["scores"] == "logit" and r.headers["x-crossrank-activation"] == "none"


def test_rank_fields_join_fields_as_the_library_joins_title_and_text(url: str, default_model: CrossEncoder) -> None:
    records = [
        {"id": "a", "title": "Cats", "text": "A cat is a small carnivorous mammal."},
        {"id": "b", "title": "", "text": "Paris is the capital of France."},
        {"id": "c", "title": "Dogs", "text": "The dog is a domesticated descendant of the wolf."},
    ]
    r = httpx.post(
        f"{url}/v2/rerank",
        json={"query": "what is a cat", "documents": records, "rank_fields": ["title", "text"]},
        timeout=HTTP_TIMEOUT,
    )
    got = [(x["index"], x["relevance_score"]) for x in r.json()["results"]]
    want = [(h.index, h.score) for h in default_model.rerank("what is a cat", records).hits]
    assert_same_ranking(got, want)
    r = httpx.post(
        f"{url}/v2/rerank", json={"query": "q", "documents": records, "rank_fields": ["body"]}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 400 and "field 'body'" in r.json()["message"]


def test_tei_shape(url: str, default_model: CrossEncoder) -> None:
    query, docs = dl19_candidates(2, 8)[1]
    r = httpx.post(f"{url}/rerank", json={"query": query, "texts": docs, "return_text": True}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    ranks = r.json()
    assert isinstance(ranks, list) and all(set(x) == {"index", "score", "text"} for x in ranks)
    assert_same_ranking([(x["index"], x["score"]) for x in ranks], library_ranking(default_model, query, docs))
    assert all(x["text"] == docs[x["index"]] for x in ranks)
    assert int(r.headers["x-compute-tokens"]) > 0 and r.headers["x-crossrank-truncated"] == "0"
    r = httpx.post(f"{url}/rerank", json={"query": query, "texts": docs, "raw_scores": True}, timeout=HTTP_TIMEOUT)
    ranks = r.json()
    assert all(set(x) == {"index", "score"} for x in ranks)
    assert_same_ranking([(x["index"], x["score"]) for x in ranks], library_ranking(default_model, query, docs, "none"))


def test_score_endpoint_equals_score_details(url: str, default_model: CrossEncoder) -> None:
    (q1, d1), (q2, d2) = dl19_candidates(2, 3)
    pairs = [[q1, d] for d in d1] + [[q2, d] for d in d2]
    body = httpx.post(f"{url}/v1/score", json={"pairs": pairs}, timeout=HTTP_TIMEOUT).json()
    want = default_model.score_details([tuple(p) for p in pairs])
    np.testing.assert_allclose(body["scores"], want.scores, rtol=0, atol=1e-6)
    assert body["truncated"] == want.truncated.tolist() and body["num_tokens"] == want.num_tokens.tolist()
    assert body["activation"] == "sigmoid" and body["labels"] == ["LABEL_0"]
    raw = httpx.post(f"{url}/v1/score", json={"pairs": pairs, "raw_scores": True}, timeout=HTTP_TIMEOUT).json()
    np.testing.assert_allclose(
        raw["scores"], default_model.score([tuple(p) for p in pairs], activation="none"), rtol=0, atol=1e-6
    )


def test_models_health_ready(url: str) -> None:
    models = httpx.get(f"{url}/v1/models", timeout=HTTP_TIMEOUT).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "default"
    assert models["data"][0]["max_length"] == 512 and models["models"][0]["endpoints"] == ["rerank"]
    assert httpx.get(f"{url}/health", timeout=HTTP_TIMEOUT).json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready", timeout=HTTP_TIMEOUT).json() == {"status": "ready", "model": "default"}
    for path in ("/health", "/ready", "/"):  # probes that send HEAD get an answer without a body
        head = httpx.head(f"{url}{path}", timeout=HTTP_TIMEOUT)
        assert head.status_code == 200 and head.content == b"", path
    assert httpx.head(f"{url}/", timeout=HTTP_TIMEOUT).headers["content-type"].startswith("text/html")
    spec = httpx.get(f"{url}/openapi.json", timeout=HTTP_TIMEOUT).json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/v1/search", "/v1/models", "/metrics"} <= set(
        spec["paths"]
    )


# ---------------------------------------------------------------------- truncation is never silent


def test_truncation_is_reported_everywhere(url: str, default_model: CrossEncoder) -> None:
    long_doc = " ".join(passages(20))  # ~1,500 tokens: cut to 512
    docs = ["A cat is a small feline.", long_doc, "Paris is in France."]
    before = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
    r = httpx.post(f"{url}/v1/rerank", json={"query": "what is a cat", "documents": docs}, timeout=HTTP_TIMEOUT)
    meta = r.json()["meta"]
    assert meta["crossrank"]["truncated"] == [1] and r.headers["x-crossrank-truncated"] == "1"
    assert len(meta["warnings"]) == 1 and "1 of 3 documents were cut" in meta["warnings"][0]
    assert_same_ranking(
        [(x["index"], x["relevance_score"]) for x in r.json()["results"]],
        library_ranking(default_model, "what is a cat", docs),
    )
    after = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric(after, "crossrank_truncated_pairs_total") == metric(before, "crossrank_truncated_pairs_total") + 1

    # TEI: truncate=false refuses, as TEI does (413, validation); true cuts and says so
    r = httpx.post(
        f"{url}/rerank", json={"query": "what is a cat", "texts": docs, "truncate": False}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 413 and r.json()["error_type"] == "validation" and "[1]" in r.json()["error"]
    r = httpx.post(
        f"{url}/rerank", json={"query": "what is a cat", "texts": docs, "truncate": True}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 200 and r.headers["x-crossrank-truncated"] == "1"

    # Cohere v2's max_tokens_per_doc cuts documents first, and reports it
    short = "A cat is a small carnivorous mammal, the only domesticated species in the family Felidae."
    r = httpx.post(
        f"{url}/v2/rerank",
        json={"model": "m", "query": "what is a cat", "documents": [short], "max_tokens_per_doc": 8},
        timeout=HTTP_TIMEOUT,
    )
    body = r.json()
    cut = default_model.encoder.windows(short, budget=8, stride=8)[0]
    assert body["meta"]["crossrank"]["truncated"] == [0] and "max_tokens_per_doc=8" in body["meta"]["warnings"][0]
    assert body["results"][0]["relevance_score"] == pytest.approx(
        float(default_model.score([("what is a cat", cut)])[0]), abs=1e-6
    )


# ---------------------------------------------------------------------- errors in the called API's shape


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v1/rerank", {"query": "  ", "documents": ["a"]}, 400, "query is empty"),
        ("/v1/rerank", {"query": "q", "documents": []}, 400, "cannot be empty"),
        ("/v1/rerank", {"query": "q", "documents": ["ok", " \n"]}, 400, "documents[1] is empty"),
        ("/v1/rerank", {"query": "q", "documents": ["ok", ""]}, 400, "documents.1"),
        ("/v1/rerank", {"query": 5, "documents": ["a"]}, 400, "query"),
        ("/v1/rerank", {"query": "q", "documents": [1]}, 400, "documents.0"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": "3"}, 400, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/v1/rerank", {"documents": ["a"]}, 400, "query: Field required"),
        ("/v2/rerank", {"query": "q", "documents": [{"title": "no text"}]}, 400, "field 'text'"),
        ("/v2/rerank", {"query": "q", "documents": "abc"}, 400, "documents"),
        ("/v2/rerank", {"query": "q", "documents": [{"text": "a"}], "rank_fields": []}, 400, "rank_fields"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "rank_fields": []}, 400, "rank_fields"),
        ("/rerank", {"query": "q", "texts": []}, 400, "`texts` cannot be empty"),
        ("/rerank", {"query": "q", "texts": [None]}, 422, "texts.0"),
        ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "left"}, 422, "not supported"),
        ("/v1/score", {"pairs": [["q"]]}, 400, "pairs.0"),
        ("/v1/score", {"pairs": []}, 400, "cannot be empty"),
        ("/v1/search", {"query": "q"}, 404, "no index is served"),
    ],
)
def test_bad_input_gets_json_errors_in_the_route_shape(
    url: str, path: str, payload: dict[str, Any], status: int, needle: str
) -> None:
    r = httpx.post(f"{url}{path}", json=payload, timeout=HTTP_TIMEOUT)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    message = error_message(path, r.json())
    assert needle in message, message


def error_message(path: str, body: Any) -> str:
    """Return the message of an error body, checking it has exactly the route's shape."""
    if path == "/rerank":
        assert set(body) == {"error", "error_type"}
        return str(body["error"])
    if path == "/v1/rerank":
        assert set(body) == {"message", "detail"} and body["message"] == body["detail"]
        return str(body["message"])
    if path == "/v2/rerank":
        assert set(body) == {"message"}
        return str(body["message"])
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    return str(body["error"]["message"])


def test_malformed_bodies_and_unknown_routes(url: str) -> None:
    r = httpx.post(
        f"{url}/v2/rerank", content=b"{not json", headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    r = httpx.post(
        f"{url}/rerank", content=b"[1, 2]", headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    r = httpx.get(f"{url}/v1/rerank", timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and "message" in r.json()
    r = httpx.get(f"{url}/nothing/here", timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_limits(default_model: CrossEncoder) -> None:
    config = ServeConfig(max_documents=3, max_document_chars=50, max_body_bytes=2000)
    with serving(create_app(default_model, config=config)) as base:
        r = httpx.post(
            f"{base}/v1/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]}, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 400 and "4 documents is more than the limit of 3" in r.json()["message"]
        r = httpx.post(f"{base}/rerank", json={"query": "q", "texts": ["x" * 51]}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 413 and r.json()["error_type"] == "validation" and "51 characters" in r.json()["error"]
        r = httpx.post(f"{base}/v2/rerank", json={"query": "q" * 51, "documents": ["a"]}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 400 and "query has 51 characters" in r.json()["message"]
        big = json.dumps({"query": "q", "documents": ["word " * 10] * 50}).encode()
        r = httpx.post(
            f"{base}/v2/rerank", content=big, headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 413 and "2000 bytes" in r.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
            for i in range(0, len(big), 500):
                yield big[i : i + 500]

        r = httpx.post(
            f"{base}/rerank", content=chunks(), headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 413 and r.json()["error_type"] == "validation"
        assert (
            httpx.post(
                f"{base}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=HTTP_TIMEOUT
            ).status_code
            == 200
        )


# ---------------------------------------------------------------------- batching and load


def test_concurrent_requests_merge_into_fewer_model_calls(default_model: CrossEncoder) -> None:
    config = ServeConfig(max_wait_ms=200, max_batch_pairs=512)
    cands = dl19_candidates(8, 4)
    blocker_query, blocker_docs = dl19_candidates(1, 60)[0]
    with serving(create_app(default_model, config=config)) as base:

        async def burst() -> tuple[httpx.Response, list[httpx.Response]]:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
                # a first request keeps the worker busy while the others queue up behind it
                blocker = asyncio.create_task(
                    client.post("/v1/rerank", json={"query": blocker_query, "documents": blocker_docs})
                )
                await asyncio.sleep(0.05)
                small = [
                    client.post(path, json=body)
                    for q, docs in cands
                    for path, body in (
                        ("/v1/rerank", {"query": q, "documents": docs}),
                        ("/rerank", {"query": q, "texts": docs}),
                    )
                ]
                return await blocker, list(await asyncio.gather(*small))

        blocked, responses = asyncio.run(burst())
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert blocked.status_code == 200 and all(r.status_code == 200 for r in responses)
    calls = metric(text, "crossrank_batch_requests_count")
    assert metric(text, "crossrank_batch_requests_sum") == 17
    assert calls <= 4, f"17 requests took {calls} model calls"  # the 16 small ones share at most 3
    assert metric(text, "crossrank_batch_pairs_sum") == 60 + 16 * 4
    assert metric(text, "crossrank_requests_total", route="/v1/rerank", status="200") == 9
    # merged with other requests, each still gets exactly the library's ranking and scores
    for (q, docs), i in zip(cands, range(0, 16, 2), strict=True):
        want = library_ranking(default_model, q, docs)
        assert_same_ranking([(x["index"], x["relevance_score"]) for x in responses[i].json()["results"]], want)
        assert_same_ranking([(x["index"], x["score"]) for x in responses[i + 1].json()], want)


def test_health_answers_while_inference_is_busy(default_model: CrossEncoder) -> None:
    docs = passages(300)
    with serving(create_app(default_model)) as base, ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(
            httpx.post, f"{base}/v1/rerank", json={"query": "what is a cat", "documents": docs}, timeout=120
        )
        while (
            metric(httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text, "crossrank_queue_depth") < 1
            and not heavy.done()
        ):
            time.sleep(0.005)
        for _ in range(5):
            assert httpx.get(f"{base}/health", timeout=60).status_code == 200
            assert httpx.get(f"{base}/ready", timeout=60).status_code == 200
        # the probes were answered while the model was busy: they never wait for inference
        assert not heavy.done(), "the heavy request finished before the checks; use more documents"
        assert heavy.result().status_code == 200


def test_full_queue_answers_429_at_once_and_accepted_requests_complete(default_model: CrossEncoder) -> None:
    import psutil

    config = ServeConfig(queue_size=2, max_wait_ms=0)
    query, docs = dl19_candidates(1, 10)[0]
    blocker = {"query": "what is a cat", "documents": passages(100)}
    proc = psutil.Process()
    with serving(create_app(default_model, config=config)) as base:
        httpx.post(f"{base}/v1/rerank", json={"query": query, "documents": docs}, timeout=HTTP_TIMEOUT)  # warm
        rss_before = proc.memory_info().rss

        def call(i: int) -> tuple[int, bool, dict[str, str], Any]:
            path, body = (
                ("/rerank", {"query": query, "texts": docs})
                if i % 2
                else ("/v2/rerank", {"query": query, "documents": docs})
            )
            r = httpx.post(f"{base}{path}", json=body, timeout=120)
            return r.status_code, busy.done(), dict(r.headers), (path, r.json())

        with ThreadPoolExecutor(21) as pool:
            # one long request takes one of the two places; then 10x the queue's capacity at once
            busy = pool.submit(httpx.post, f"{base}/v1/rerank", json=blocker, timeout=120)
            while (
                metric(httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text, "crossrank_queue_depth") < 1
                and not busy.done()
            ):
                time.sleep(0.005)
            results = list(pool.map(call, range(20)))
            assert busy.result().status_code == 200
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
        assert httpx.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200  # the server survived
        rss_after = proc.memory_info().rss
    statuses = [s for s, *_ in results]
    assert set(statuses) <= {200, 429} and statuses.count(429) >= 10 and statuses.count(200) >= 1
    for status, blocker_done, headers, (path, body) in results:
        if status == 429:  # refused at once: before the long request in the queue had finished
            assert not blocker_done and int(headers["retry-after"]) >= 1
            assert "queue is full" in error_message(path, body)
            assert path != "/rerank" or body["error_type"] == "overloaded"
        else:  # accepted requests complete, with the library's ranking
            ranked = body if path == "/rerank" else body["results"]
            got = [(x["index"], x.get("relevance_score", x.get("score"))) for x in ranked]
            assert_same_ranking(got, library_ranking(default_model, query, docs))
    assert metric(text, "crossrank_rejected_total", reason="queue_full") == statuses.count(429)
    assert metric(text, "crossrank_requests_total", route="/v2/rerank", status="429") >= 1
    assert metric(text, "crossrank_queue_depth") == 0
    assert rss_after - rss_before < 200 * 2**20  # memory stays bounded


def test_timeout_gets_504_and_the_server_goes_on(default_model: CrossEncoder) -> None:
    config = ServeConfig(timeout_s=0.01)
    docs = passages(100)
    with serving(create_app(default_model, config=config)) as base:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "what is a cat", "documents": docs}, timeout=60)
        assert r.status_code == 504 and "did not finish within 0.01 s" in r.json()["message"]
        r = httpx.post(f"{base}/rerank", json={"query": "what is a cat", "texts": docs}, timeout=60)
        assert r.status_code == 504 and r.json()["error_type"] == "timeout"
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
        assert metric(text, "crossrank_rejected_total", reason="timeout") == 2
        assert metric(text, "crossrank_requests_total", route="/v1/rerank", status="504") == 1


# ---------------------------------------------------------------------- security


def test_api_keys_and_no_key_material_in_logs(
    default_model: CrossEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key, other = "ck-live-7f3a9b2c1d0e5f46", "ck-live-00000000deadbeef"
    monkeypatch.setenv("CROSSRANK_TEST_KEYS", f"{other}, {key}")
    keys = ApiKeys.from_env("CROSSRANK_TEST_KEYS")
    secret_query = "zebra-quokka-secret-query"
    caplog.set_level(logging.DEBUG)
    with serving(create_app(default_model, api_keys=keys)) as base:
        body = {"query": secret_query, "documents": ["A cat is a small feline.", "Paris is in France."]}
        r = httpx.post(f"{base}/v1/rerank", json=body, timeout=HTTP_TIMEOUT)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in r.json()["message"]
        r = httpx.post(
            f"{base}/rerank",
            json={"query": "q", "texts": ["a"]},
            headers={"Authorization": "Bearer nope"},
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
        r = httpx.post(f"{base}/v1/rerank", json=body, headers={"Authorization": f"Basic {key}"}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 401
        for good in (key, other):
            r = httpx.post(
                f"{base}/v1/rerank", json=body, headers={"Authorization": f"Bearer {good}"}, timeout=HTTP_TIMEOUT
            )
            assert r.status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).status_code == 401
        assert (
            httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT).status_code
            == 200
        )
        assert (
            httpx.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200
            and httpx.get(f"{base}/ready", timeout=HTTP_TIMEOUT).status_code == 200
        )
    logged = caplog.text
    assert "POST /v1/rerank 401" in logged and "POST /v1/rerank 200" in logged
    for secret in (key, other, "ck-live", secret_query, "feline"):
        assert secret not in logged
    assert key not in repr(keys) and "2 keys" in repr(keys)


def test_api_keys_from_file_and_bad_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys"
    path.write_text("# ops keys\n\nfirst-key-123456\nsecond-key-654321\n", encoding="utf-8")
    keys = ApiKeys.from_file(path)
    assert len(keys) == 2 and keys.check("Bearer second-key-654321") and keys.check("bearer  first-key-123456")
    assert not keys.check("Bearer first-key-1234567") and not keys.check("first-key-123456")
    path.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no keys"):
        ApiKeys.from_file(path)
    with pytest.raises(ConfigError, match="shorter than 8") as info:
        ApiKeys(["short"])
    assert "short" not in str(info.value).replace("shorter", "")
    monkeypatch.delenv("CROSSRANK_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="unset or empty"):
        ApiKeys.from_env("CROSSRANK_NO_SUCH_VAR")


def test_cors_is_off_unless_configured(url: str, default_model: CrossEncoder) -> None:
    origin = {"Origin": "https://app.example.com"}
    r = httpx.get(f"{url}/v1/models", headers=origin, timeout=HTTP_TIMEOUT)
    assert "access-control-allow-origin" not in r.headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in httpx.options(f"{url}/v1/rerank", headers=preflight, timeout=HTTP_TIMEOUT).headers
    )
    config = ServeConfig(cors_origins=("https://app.example.com",))
    with serving(create_app(default_model, config=config, api_keys=ApiKeys(["cors-test-key-1"]))) as base:
        r = httpx.options(
            f"{base}/v1/rerank",
            headers={**preflight, "Access-Control-Request-Headers": "authorization"},
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = httpx.get(f"{base}/health", headers={"Origin": "https://evil.example.com"}, timeout=HTTP_TIMEOUT)
        assert "access-control-allow-origin" not in r.headers


def test_config_validates_and_round_trips() -> None:
    config = ServeConfig(queue_size=8, cors_origins=("http://localhost:3000",))
    assert ServeConfig.from_dict(config.to_dict()) == config
    for bad, match in [
        ({"queue_size": 0}, "queue_size"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"cors_origins": "http://x.com"}, "tuple"),
        ({"cors_origins": ("http://x.com/path",)}, "no path"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ServeConfig(**bad)
    with pytest.raises(ConfigError, match="unknown serve settings"):
        ServeConfig.from_dict({"queue": 3})


# ---------------------------------------------------------------------- search over an index


def test_search_runs_the_pipeline(default_model: CrossEncoder, dl19_index: Any) -> None:
    from crossrank.pipeline import Pipeline

    index = dl19_index
    queries = list(read_beir_queries(EXAMPLES / "queries.jsonl").values())[:4]
    with serving(create_app(default_model, index=index, config=ServeConfig(max_wait_ms=100))) as base:
        with ThreadPoolExecutor(4) as pool:
            bodies = list(
                pool.map(
                    lambda q: httpx.post(
                        f"{base}/v1/search", json={"query": q, "k": 3, "depth": 10}, timeout=60
                    ).json(),
                    queries,
                )
            )
        r = httpx.post(
            f"{base}/v1/search",
            json={"query": queries[0], "k": 5, "rerank": False, "return_documents": False},
            timeout=HTTP_TIMEOUT,
        )
        first_stage = r.json()
        r = httpx.post(f"{base}/v1/search", json={"query": queries[0], "k": 500}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 400 and "k=500" in r.json()["error"]["message"]
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    pipe = Pipeline(index, reranker=default_model)
    for q, body in zip(queries, bodies, strict=True):
        want = pipe.search(q, k=3, depth=10)
        assert body["model"] == "default" and body["reranked"] and body["depth"] == 10
        assert [h["doc_id"] for h in body["hits"]] == want.doc_ids()
        np.testing.assert_allclose([h["score"] for h in body["hits"]], [h.score for h in want.hits], atol=1e-6)
        assert all(h["document"]["text"] for h in body["hits"])
    assert not first_stage["reranked"] and "document" not in first_stage["hits"][0]
    assert [h["first_stage_rank"] for h in first_stage["hits"]] == [1, 2, 3, 4, 5]
    assert metric(text, "crossrank_batch_requests_count") < 5  # the 4 concurrent searches shared calls


# ---------------------------------------------------------------------- fuzzing the OpenAPI spec


#: a valid body per POST route, which :func:`hostile_bodies` spoils
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/rerank": {"query": "cat", "documents": [{"text": "a cat"}], "return_documents": True},
    "/v2/rerank": {"query": "cat", "documents": [{"text": "a cat"}], "return_documents": True},
    "/rerank": {"query": "cat", "texts": ["a cat"], "return_text": True},
    "/v1/score": {"pairs": [["cat", "a cat"]]},
    "/v1/search": {"query": "library", "k": 2, "depth": 5},
    "/weaviate/rerank": {"query": "cat", "documents": ["a cat"], "property": ""},
    "/score": {"model": "any", "text_1": "cat", "text_2": ["a cat"]},
    # judging is off on this server: these answer 404 with the fix, in the documented shape
    "/v1/judge/queries": {"query": "library"},
    "/v1/judge/pool": {"query_id": "1"},
    "/v1/judge/judgment": {"query_id": "1", "doc_id": "d", "grade": 2},
}


def hostile_bodies(valid: dict[str, Any]) -> list[bytes]:
    """Return ``valid`` plus one field Python's parser takes and JSON does not: NaN, infinities, lone surrogates."""
    text = json.dumps(valid)[:-1]
    extras = ['"x": NaN', '"x": -Infinity', '"x": Infinity', '"x": 1e999', '"x": "\\ud800"', '"\\udfff": 1']
    return [f"{text}, {extra}}}".encode() for extra in extras]


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    default_model: CrossEncoder, dl19_index: Any
) -> None:
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    config = ServeConfig(max_documents=8, max_document_chars=300, max_search_k=20, max_search_depth=20)
    with serving(create_app(default_model, index=dl19_index, config=config)) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 17
        for operation in operations:
            post = operation.method.upper() == "POST"
            # what Python's JSON parser takes but JSON is not, and a Host a DNS-rebinding page sends
            hostile = [operation.Case(headers={"Host": "attacker.example:8080"})]
            if post:
                valid = VALID_BODIES[operation.path]
                # the valid body as it is, so each route answers 200 at least once whatever the generator
                # draws (its draws vary with the tests run before it in the session)
                hostile = [
                    operation.Case(body=valid, media_type="application/json"),
                    operation.Case(body=valid, media_type="application/json", headers={"Host": "attacker.example"}),
                    *(operation.Case(body=body, media_type="application/json") for body in hostile_bodies(valid)),
                ]
            # a GET without parameters has no wrong input to make
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if post else (GenerationMode.POSITIVE,):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=30 if post else 3,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def fuzz(case: Any) -> None:
                    case.call_and_validate(base_url=base, checks=checks)

                for case in hostile:
                    fuzz = example(case=case)(fuzz)
                fuzz()
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert not re.search(r'crossrank_requests_total\{route="[^"]*",status="5\d\d"\}', text)
    for route in ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/v1/search"):  # some got through
        assert metric(text, "crossrank_requests_total", route=route, status="200") >= 1, route
        # the explicit examples were refused as they should be: each hostile body, and the foreign Host
        assert metric(text, "crossrank_requests_total", route=route, status="400") >= 6, route
        assert metric(text, "crossrank_requests_total", route=route, status="421") >= 1, route
    assert metric(text, "crossrank_requests_total", route="/v1/models", status="421") >= 1


# ---------------------------------------------------------------------- the command and graceful shutdown


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_drains_in_flight_requests_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    code = (
        "import sys; from crossrank.cli import serve_cmd; from crossrank.cli.app import main; "
        "sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    )
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log_out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", str(port), "--max-wait-ms", "0"],
            stdout=log_out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log_file.read_text()
                try:
                    if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "crossrank serve did not become ready"
                time.sleep(0.1)
            query, docs = dl19_candidates(1, 40)[0]
            with ThreadPoolExecutor(6) as pool:
                futures = [
                    pool.submit(httpx.post, f"{base}/v1/rerank", json={"query": query, "documents": docs}, timeout=120)
                    for _ in range(6)
                ]
                while True:  # every request accepted: queued, running or answered
                    text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
                    done = metric(text, "crossrank_requests_total", route="/v1/rerank", status="200")
                    if done + metric(text, "crossrank_queue_depth") >= 6:
                        break
                    time.sleep(0.01)
                assert done < 6, "all requests finished before SIGTERM; send more documents"
                proc.send_signal(signal.SIGTERM)
                responses = [f.result() for f in futures]
            assert [r.status_code for r in responses] == [200] * 6
            first = responses[0].json()["results"]
            assert all(r.json()["results"] == first for r in responses)
            # uvicorn re-raises the signal once it has shut down, as a supervisor expects
            assert proc.wait(60) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logged = log_file.read_text()
    assert "batcher drained and stopped" in logged and query not in logged
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=2)


def test_cli_serve_rejects_bad_settings_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from crossrank.cli import serve_cmd  # registers `serve` (app.py imports it too)
    from crossrank.cli.app import app

    assert serve_cmd.serve is not None
    monkeypatch.delenv("CROSSRANK_NO_KEYS_HERE", raising=False)
    runner = CliRunner()
    for args, needle in [
        (["--api-key-env", "CROSSRANK_NO_KEYS_HERE"], "'CROSSRANK_NO_KEYS_HERE' is unset or empty"),
        (["--cors-origin", "example.com"], "cors origin must be"),
        (["--queue-size", "0"], "queue_size must be an int >= 1"),
        (["--api-key-env", "A", "--api-key-file", "b"], "not both"),
        (["--allowed-host", "http://rerank.example.com"], "allowed host must be '*', a host name"),
        (["--allowed-host", "rerank.example.com:8080"], "without scheme, port or path"),
        (["--header-timeout", "0"], "header_timeout_s must be a number of seconds > 0"),
        (["--body-timeout", "-1"], "body_timeout_s must be a number of seconds > 0"),
    ]:
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2, result.output
        assert needle in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_serve_on_every_address_says_which_host_names_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from crossrank.cli.app import app

    runner = CliRunner()
    caplog.set_level(logging.WARNING, logger="crossrank.serve")
    # an unknown engine stops the command after the settings are read: nothing is loaded or bound
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--engine", "none"])
    assert result.exit_code == 2 and "--engine must be" in result.output
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("bound to 0.0.0.0: answering only Host names ")
    assert f"localhost, 127.0.0.1, [::1], {socket.gethostname()} and this machine's addresses" in warning
    assert "DNS rebinding" in warning and "--allowed-host" in warning
    caplog.clear()
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--allowed-host", "rerank.internal", "--engine", "none"])
    assert result.exit_code == 2 and not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_docstring_examples_run() -> None:
    import doctest

    import crossrank.serve.config
    import crossrank.serve.schemas

    for module in (crossrank.serve.config, crossrank.serve.schemas):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
