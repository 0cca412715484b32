"""Real client libraries from PyPI, pointed at crossrank over loopback, get the library's rankings.

The Cohere SDK (v1 and v2 clients), LangChain's ``CohereRerank`` and LlamaIndex's Cohere rerank
postprocessor are used unchanged, with only their base URL set to the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import pytest

from crossrank import CrossEncoder
from crossrank.serve import ApiKeys, ServeConfig, create_app
from test_serve import assert_same_ranking, dl19_candidates, library_ranking, serving

KEY = "client-test-key-5a1f0c9e"


@pytest.fixture(scope="module")
def url(default_model: CrossEncoder) -> Iterator[str]:
    with serving(create_app(default_model, api_keys=ApiKeys([KEY]), config=ServeConfig(max_documents=50))) as base:
        yield base


def close_sdk_client(client: Any) -> None:
    """Close the connection pool a Cohere SDK client opened itself (it never does), so no socket leaks."""
    client._client_wrapper.httpx_client.httpx_client.close()


@pytest.fixture(scope="module")
def candidates() -> tuple[str, list[str]]:
    return dl19_candidates(3, 10)[2]


def test_cohere_sdk_v1_client(url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]) -> None:
    query, docs = candidates
    with httpx.Client(timeout=60) as http:
        co = cohere.Client(api_key=KEY, base_url=url, httpx_client=http)
        response = co.rerank(query=query, documents=docs, top_n=4, return_documents=True, model="rerank-english-v3.0")
    got = [(r.index, r.relevance_score) for r in response.results]
    assert_same_ranking(got, library_ranking(default_model, query, docs)[:4])
    assert all(r.document is not None and r.document.text == docs[r.index] for r in response.results)
    assert response.meta is not None and response.meta.api_version is not None
    assert response.meta.api_version.version == "1" and response.meta.warnings == []
    assert response.meta.tokens is not None and response.meta.tokens.input_tokens


def test_cohere_sdk_v2_client_and_its_errors(
    url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]
) -> None:
    query, docs = candidates
    with httpx.Client(timeout=60) as http:
        co = cohere.ClientV2(api_key=KEY, base_url=url, httpx_client=http)
        response = co.rerank(model="rerank-v3.5", query=query, documents=docs, top_n=3)
        assert_same_ranking(
            [(r.index, r.relevance_score) for r in response.results], library_ranking(default_model, query, docs)[:3]
        )
        assert response.meta is not None and response.meta.api_version is not None
        assert response.meta.api_version.version == "2"
        # errors come back as the SDK's typed errors, with the message in Cohere's shape
        with pytest.raises(cohere.errors.BadRequestError) as bad:
            co.rerank(model="rerank-v3.5", query=query, documents=[])
        assert bad.value.body == {"message": "`documents` cannot be empty; send at least one document"}
        wrong = cohere.ClientV2(api_key="wrong-key-123456", base_url=url, httpx_client=http)
        with pytest.raises(cohere.errors.UnauthorizedError):
            wrong.rerank(model="m", query=query, documents=docs)


def test_cohere_sdk_async_v2_client(url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]) -> None:
    import asyncio

    query, docs = candidates

    async def main() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(timeout=60) as http:
            co = cohere.AsyncClientV2(api_key=KEY, base_url=url, httpx_client=http)
            results = await asyncio.gather(*(co.rerank(model="m", query=query, documents=docs) for _ in range(4)))
        assert all(r.results == results[0].results for r in results)
        return [(r.index, r.relevance_score) for r in results[0].results]

    assert_same_ranking(asyncio.run(main()), library_ranking(default_model, query, docs))


def test_langchain_cohere_rerank(url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]) -> None:
    import langchain_cohere
    from langchain_core.documents import Document

    query, docs = candidates
    reranker = langchain_cohere.CohereRerank(base_url=url, cohere_api_key=KEY, model="rerank-v3.5", top_n=3)
    records = [Document(page_content=d, metadata={"position": i}) for i, d in enumerate(docs)]
    try:
        kept = reranker.compress_documents(records, query)
    finally:
        close_sdk_client(reranker.client)
    got = [(d.metadata["position"], d.metadata["relevance_score"]) for d in kept]
    assert_same_ranking(got, library_ranking(default_model, query, docs)[:3])


def test_llama_index_cohere_rerank(url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]) -> None:
    import llama_index.postprocessor.cohere_rerank as cohere_rerank
    from llama_index.core.schema import NodeWithScore, TextNode

    query, docs = candidates
    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}"), score=0.0) for i, d in enumerate(docs)]
    post = cohere_rerank.CohereRerank(top_n=4, model="rerank-v3.5", api_key=KEY, base_url=url)
    try:
        kept = post.postprocess_nodes(nodes, query_str=query)
    finally:
        close_sdk_client(post._client)
    got = [(int(n.node.node_id[1:]), float(n.score or 0.0)) for n in kept]
    assert_same_ranking(got, library_ranking(default_model, query, docs)[:4])
