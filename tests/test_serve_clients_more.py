"""LiteLLM's rerank providers and Haystack's rankers, pointed at crossrank over loopback, get the library's rankings.

Each client is used unchanged, with only its base URL (and a key) set to the server; which route it
lands on is what its own source builds:

- ``litellm.rerank``: ``cohere/`` posts to ``{api_base}/v2/rerank``, or to ``/v1/rerank`` with the
  v1 config when ``api_base`` ends in ``/v1/rerank``; ``jina_ai/`` replaces the path of ``api_base``
  with ``/v1/rerank``; ``infinity/`` and ``hosted_vllm/`` append ``/rerank`` (so ``api_base`` is the
  server's ``/v1``, whose ``/v1/rerank`` answers their Cohere-shaped body); ``huggingface/`` appends
  ``/rerank`` and sends text-embeddings-inference's body (``texts``), which the server's ``/rerank``
  answers.
- Haystack: ``HuggingFaceTEIRanker`` (huggingface-api-haystack) posts TEI's body to ``{url}/rerank``;
  ``CohereRanker`` (cohere-haystack) calls the Cohere SDK's v2 client, so ``/v2/rerank``.

No client may reach past loopback: LiteLLM reads its bundled cost map and Haystack's telemetry is
off, and a guard refuses (and the tests report) any name lookup other than the server's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import cohere
import pytest

from crossrank import CrossEncoder
from crossrank.serve import ApiKeys, ServeConfig, create_app
from test_serve import assert_same_ranking, dl19_candidates, library_ranking, serving
from test_serve_clients import close_sdk_client

KEY = "client-more-test-key-8c2d41b7"
WRONG = "wrong-key-0123456789"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def off_loopback() -> Iterator[list[str]]:
    """Refuse every name lookup but loopback's, as a machine with no internet would; yield the names refused.

    LiteLLM and Haystack are imported under the guard with their network features switched off
    through the environment, which is restored afterwards.
    """
    refused: list[str] = []
    lookup = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            refused.append(name)
            raise OSError(f"the test refuses to look up {name!r}: no client may leave loopback")
        return lookup(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", guarded)
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        mp.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
        # litellm points tiktoken at its bundled files on import; undone with the rest
        mp.delenv("TIKTOKEN_CACHE_DIR", raising=False)
        yield refused


@pytest.fixture(autouse=True)
def stays_on_loopback(off_loopback: list[str]) -> Iterator[None]:
    before = len(off_loopback)
    yield
    assert off_loopback[before:] == [], "a client tried to reach past loopback"


@pytest.fixture(scope="module")
def litellm(off_loopback: list[str]) -> ModuleType:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.disable_hf_tokenizer_download = True
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    return litellm


@pytest.fixture(scope="module")
def url(default_model: CrossEncoder, off_loopback: list[str]) -> Iterator[str]:
    with serving(create_app(default_model, api_keys=ApiKeys([KEY]), config=ServeConfig(max_documents=50))) as base:
        yield base


@pytest.fixture(scope="module")
def candidates() -> tuple[str, list[str]]:
    return dl19_candidates(3, 10)[1]


def results_of(response: Any) -> list[tuple[int, float]]:
    return [(r["index"], r["relevance_score"]) for r in response.results]


# ---------------------------------------------------------------------- LiteLLM

# (model, what api_base is set to relative to the server's base URL, whether documents can come back):
# LiteLLM's infinity provider reads a returned document as a bare string (Infinity's own shape), not
# Cohere's {"text": ...}, so it asks for none.
LITELLM_PROVIDERS = [
    pytest.param("cohere/rerank-english-v3.0", "", True, id="cohere-v2"),
    pytest.param("cohere/rerank-english-v3.0", "/v1/rerank", True, id="cohere-v1"),
    pytest.param("jina_ai/jina-reranker-v2-base-multilingual", "", True, id="jina_ai"),
    pytest.param("infinity/BAAI/bge-reranker-base", "/v1", False, id="infinity"),
    pytest.param("hosted_vllm/BAAI/bge-reranker-v2-m3", "/v1", True, id="hosted_vllm"),
]


@pytest.mark.parametrize(("model", "path", "documents"), LITELLM_PROVIDERS)
def test_litellm_cohere_shaped_providers(
    litellm: ModuleType,
    url: str,
    default_model: CrossEncoder,
    candidates: tuple[str, list[str]],
    model: str,
    path: str,
    documents: bool,
) -> None:
    query, docs = candidates
    want = library_ranking(default_model, query, docs)
    response = litellm.rerank(
        model=model, query=query, documents=docs, top_n=4, return_documents=documents, api_base=url + path, api_key=KEY
    )
    assert_same_ranking(results_of(response), want[:4])
    texts = [r["document"]["text"] if documents else r.get("document") for r in response.results]
    assert texts == ([docs[i] for i, _ in want[:4]] if documents else [None] * 4)
    everything = litellm.rerank(
        model=model, query=query, documents=docs, return_documents=documents, api_base=url + path, api_key=KEY
    )
    assert_same_ranking(results_of(everything), want)


@pytest.mark.parametrize(("model", "path", "documents"), LITELLM_PROVIDERS)
def test_litellm_providers_raise_401_on_a_wrong_key(
    litellm: ModuleType, url: str, candidates: tuple[str, list[str]], model: str, path: str, documents: bool
) -> None:
    query, docs = candidates
    with pytest.raises(litellm.exceptions.APIConnectionError) as err:
        litellm.rerank(
            model=model, query=query, documents=docs, return_documents=documents, api_base=url + path, api_key=WRONG
        )
    assert_refused(err.value)


def assert_refused(err: Exception) -> None:
    """Check a LiteLLM rerank error carries the server's 401.

    LiteLLM maps no rerank error to its AuthenticationError: every provider's comes back as an
    APIConnectionError with the server's message, raised while handling the provider's own error,
    which keeps the status.
    """
    assert "missing or invalid API key" in str(err)
    assert getattr(err.__context__, "status_code", None) == 401


def test_litellm_huggingface_provider_gets_tei_shape(
    litellm: ModuleType,
    off_loopback: list[str],
    url: str,
    default_model: CrossEncoder,
    candidates: tuple[str, list[str]],
) -> None:
    query, docs = candidates
    start = len(off_loopback)
    want = library_ranking(default_model, query, docs)
    model = "huggingface/BAAI/bge-reranker-base"
    response = litellm.rerank(
        model=model, query=query, documents=docs, return_documents=True, api_base=url, api_key=KEY
    )
    assert_same_ranking(results_of(response), want)
    assert [r["document"]["text"] for r in response.results] == [docs[i] for i, _ in want]
    # TEI's body has no top_n: the provider passes it through, and TEI (so crossrank) ranks every text
    capped = litellm.rerank(model=model, query=query, documents=docs, top_n=3, api_base=url, api_key=KEY)
    assert_same_ranking(results_of(capped), want)
    with pytest.raises(litellm.exceptions.APIConnectionError) as err:
        litellm.rerank(model=model, query=query, documents=docs, api_base=url, api_key=WRONG)
    assert_refused(err.value)
    assert "unauthorized" in str(err.value)  # TEI's error_type
    # LiteLLM prices a huggingface/ call from https://huggingface.co/<model>/raw/main/config.json (once
    # per model and process, a failure swallowed): the one lookup past loopback any client here makes,
    # refused as on a machine with no internet, and the calls above answered all the same
    assert set(off_loopback[start:]) <= {"huggingface.co"}
    del off_loopback[start:]


def test_litellm_async_rerank(
    litellm: ModuleType, url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]
) -> None:
    query, docs = candidates

    async def main() -> list[Any]:
        calls = (
            litellm.arerank(model="cohere/rerank-v3.5", query=query, documents=docs, top_n=5, api_base=url, api_key=KEY)
            for _ in range(3)
        )
        return list(await asyncio.gather(*calls))

    responses = asyncio.run(main())
    for response in responses:
        assert_same_ranking(results_of(response), library_ranking(default_model, query, docs)[:5])


# ---------------------------------------------------------------------- Haystack


def haystack_documents(docs: list[str]) -> list[Any]:
    from haystack import Document

    return [Document(content=d, meta={"position": i}) for i, d in enumerate(docs)]


def ranked(documents: list[Any]) -> list[tuple[int, float]]:
    return [(d.meta["position"], d.score) for d in documents]


def test_haystack_tei_ranker(
    off_loopback: list[str], url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]
) -> None:
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    query, docs = candidates
    records = haystack_documents(docs)
    ranker = HuggingFaceTEIRanker(url=url, token=Secret.from_token(KEY), top_k=4)
    kept = ranker.run(query=query, documents=records)["documents"]
    assert_same_ranking(ranked(kept), library_ranking(default_model, query, docs)[:4])
    assert all(d.content == docs[d.meta["position"]] for d in kept)
    assert_same_ranking(
        ranked(ranker.run(query=query, documents=records, top_k=10)["documents"]),
        library_ranking(default_model, query, docs),
    )
    raw = HuggingFaceTEIRanker(url=url, token=Secret.from_token(KEY), top_k=3, raw_scores=True)
    assert_same_ranking(
        ranked(raw.run(query=query, documents=records)["documents"]),
        library_ranking(default_model, query, docs, activation="none")[:3],
    )
    later = asyncio.run(ranker.run_async(query=query, documents=records, top_k=2))["documents"]
    assert_same_ranking(ranked(later), library_ranking(default_model, query, docs)[:2])
    wrong = HuggingFaceTEIRanker(url=url, token=Secret.from_token(WRONG), max_retries=1)
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        wrong.run(query=query, documents=records)


def test_haystack_cohere_ranker(
    off_loopback: list[str], url: str, default_model: CrossEncoder, candidates: tuple[str, list[str]]
) -> None:
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.cohere import CohereRanker

    query, docs = candidates
    records = haystack_documents(docs)
    ranker = CohereRanker(model="rerank-v3.5", api_key=Secret.from_token(KEY), api_base_url=url, top_k=3)
    wrong = CohereRanker(model="rerank-v3.5", api_key=Secret.from_token(WRONG), api_base_url=url)
    ranker.warm_up()
    wrong.warm_up()
    try:
        kept = ranker.run(query=query, documents=records)["documents"]
        assert_same_ranking(ranked(kept), library_ranking(default_model, query, docs)[:3])
        assert all(d.content == docs[d.meta["position"]] for d in kept)
        every = ranker.run(query=query, documents=records, top_k=10)["documents"]
        assert_same_ranking(ranked(every), library_ranking(default_model, query, docs))
        with pytest.raises(cohere.errors.UnauthorizedError) as err:
            wrong.run(query=query, documents=records)
        assert err.value.status_code == 401
    finally:
        close_sdk_client(ranker._cohere_client)
        close_sdk_client(wrong._cohere_client)
