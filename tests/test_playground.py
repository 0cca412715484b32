"""The playground page at ``/``: a real server over a real index, driven in headless Chromium.

The page is checked against the API it calls: the reranked column equals ``POST /v1/search``'s
answer, the first-stage column the first stage's, rerank mode ``POST /v1/rerank``'s; server errors
(400, 401, a real 429 from a full queue) show as messages and the page goes on working. The browser
may reach only the loopback server: any other request is aborted and counted.

Screenshots go to a temporary folder, or to ``$CROSSRANK_PLAYGROUND_SHOTS`` (what
``scripts/playground-screenshots`` sets to regenerate ``docs/playground/*.png``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from browser import launched
from crossrank import CrossEncoder
from crossrank.serve import ApiKeys, ServeConfig, create_app
from crossrank.serve.app import STATIC_DIR
from test_serve import metric, serving  # uvicorn on a loopback port, in a thread

# CISI query 3, over the first 300 CISI abstracts (conftest's cisi_slice)
QUERY = "What is information science? Give definitions where possible."
RERANK_QUERY = "how to plan the building of a new university library"
KEY = "playground-test-key-5d1f9a"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 375, "height": 812}

# generous: a loaded CI machine can take seconds to answer; no test relies on a client default
HTTP_TIMEOUT = 120.0


# ---------------------------------------------------------------------- helpers


@dataclass
class Tab:
    """A page in its own browser context, with every request it made and those it was refused."""

    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def posts_to(self, path: str) -> int:
        return sum(1 for r in self.requests if r == f"POST {path}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


def open_tab(browser: Browser, base: str, viewport: dict[str, int], fragment: str = "") -> Tab:
    """Open the playground of ``base``; requests anywhere but 127.0.0.1 are aborted and recorded."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    tab = Tab(context, context.new_page())

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("http://127.0.0.1:", "data:")):
            tab.requests.append(f"{r.request.method} {httpx.URL(url).path}")
            r.continue_()
        else:
            tab.outside.append(url)
            r.abort()

    context.route("**/*", route)
    tab.page.goto(f"{base}/{fragment}")
    return tab


def wait_text(page: Page, selector: str, pattern: str, timeout: float = 30_000) -> str:
    """Wait until the element's text matches ``pattern`` (a regex); return the text."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel); return e && new RegExp(pat).test(e.textContent); }",
        arg=[selector, pattern],
        timeout=timeout,
    )
    return page.inner_text(selector)


def wait_idle(page: Page, form: str) -> None:
    """Wait until the page has no request of ``form`` in flight (its status is no longer 'busy')."""
    page.wait_for_function("(sel) => !document.querySelector(sel).textContent.endsWith('…')", arg=form, timeout=30_000)


def hits(page: Page, selector: str) -> list[dict[str, Any]]:
    """Return what the page shows for each result of a list, in order."""
    return list(
        page.eval_on_selector_all(
            f"{selector} .hit",
            """els => els.map(e => ({
                id: e.dataset.docId, index: e.dataset.index === undefined ? null : Number(e.dataset.index),
                rank: Number(e.dataset.rank),
                move: (e.querySelector('.move') || {}).textContent || null,
                entered: e.classList.contains('entered'), left: e.classList.contains('left'),
                scores: Object.fromEntries([...e.querySelectorAll('.score')].map(
                    s => [s.classList.contains('ce') ? 'ce' : 'fs', s.querySelector('.num').textContent])),
                text: (e.querySelector('.text') || {}).textContent || '',
            }))""",
        )
    )


def movement(first_rank: int, rank: int) -> str:
    delta = first_rank - rank
    return f"▲ {delta}" if delta > 0 else f"▼ {-delta}" if delta < 0 else "="


def shown(value: float) -> Any:
    """A number as the page shows it (4 decimals, or 3 significant digits for tiny values)."""
    return pytest.approx(value, rel=6e-3, abs=6e-5)


def no_overflow(page: Page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll}px wide at a {width}px viewport"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("CROSSRANK_PLAYGROUND_SHOTS")
    out = Path(folder) if folder else tmp_path_factory.mktemp("playground")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def cisi_docs(cisi_slice: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cisi_slice.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def base(default_model: CrossEncoder, cisi_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from crossrank.retrieve.index import Index

    index = Index.build(tmp_path_factory.mktemp("playground-index") / "bm25", cisi_slice, retriever="bm25")
    with serving(create_app(default_model, index=index)) as url:
        yield url


# ---------------------------------------------------------------------- the page and what it needs from the API


def test_page_and_assets_are_served_outside_the_api_description(base: str) -> None:
    r = httpx.get(f"{base}/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        asset = httpx.get(f"{base}/static/{name}", timeout=HTTP_TIMEOUT)
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    for path in STATIC_DIR.iterdir():  # nothing from a CDN or anywhere else
        assert not re.search(r"https?://|[\"'(=]\s*//", path.read_text(encoding="utf-8")), path
    text = httpx.get(
        f"{base}/metrics", timeout=HTTP_TIMEOUT
    ).text  # counted as routes of their own, not as unknown paths
    assert metric(text, "crossrank_requests_total", route="/", status="200") >= 1
    assert metric(text, "crossrank_requests_total", route="/static", status="200") >= 2
    spec = httpx.get(f"{base}/openapi.json", timeout=HTTP_TIMEOUT).json()
    assert "/" not in spec["paths"] and not any(p.startswith("/static") for p in spec["paths"])
    card = httpx.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()["data"][0]
    assert card["search"] == {
        "documents": 300,
        "retrievers": ["bm25"],
        "default_retriever": "bm25",
        "max_k": 100,
        "max_depth": 1000,
    }
    assert card["scores"] == "probability" and card["activation"] == "sigmoid"
    assert 20 < card["size_mb"] < 200 and card["pairs_per_s"] > 0


# ---------------------------------------------------------------------- search mode


def test_search_shows_both_stages_as_the_api_answers(browser: Browser, base: str, shots: Path) -> None:
    tab = open_tab(browser, base, LAPTOP)
    page = tab.page
    wait_text(page, "#model-name", "^default$")
    assert page.is_visible("#search-panel") and not page.is_visible("#rerank-panel")
    assert page.eval_on_selector_all("#search-retriever option", "os => os.map(o => o.value)") == ["bm25"]
    assert re.fullmatch(r"[\d.]+ MB", page.inner_text("#model-size"))
    assert re.search(r"[\d,]+ pairs/s at load", page.inner_text("#model-speed"))

    page.locator("#search-query").press_sequentially(QUERY)  # typed, key by key
    page.fill("#search-depth", "30")
    page.fill("#search-k", "10")
    page.press("#search-query", "Enter")  # Enter submits
    wait_text(page, "#search-status", "^10 results")
    reranked, first = hits(page, "#reranked-list"), hits(page, "#first-list")

    want = httpx.post(f"{base}/v1/search", json={"query": QUERY, "k": 10, "depth": 30}, timeout=HTTP_TIMEOUT).json()[
        "hits"
    ]
    want_first = httpx.post(
        f"{base}/v1/search", json={"query": QUERY, "k": 10, "rerank": False}, timeout=HTTP_TIMEOUT
    ).json()["hits"]
    assert [h["id"] for h in reranked] == [h["doc_id"] for h in want]
    assert [h["id"] for h in first] == [h["doc_id"] for h in want_first]
    for got, api in zip(reranked, want, strict=True):
        assert float(got["scores"]["ce"]) == shown(api["rerank_score"])
        assert float(got["scores"]["fs"]) == shown(api["first_stage_score"])
        assert got["move"] == movement(api["first_stage_rank"], api["rank"])
        assert got["entered"] == (api["first_stage_rank"] > 10)
    for got, api in zip(first, want_first, strict=True):
        assert float(got["scores"]["fs"]) == shown(api["first_stage_score"])
    entered = {h["id"] for h in reranked if h["entered"]}
    left = {h["id"] for h in first if h["left"]}
    assert left == {h["id"] for h in first} - {h["id"] for h in reranked}
    assert len(entered) == len(left) > 0  # this query changes the top 10
    assert any(h["move"] != "=" for h in reranked)
    status = page.inner_text("#search-status")
    assert f"{len(entered)} entered the top 10, {len(left)} left it" in status
    assert re.search(r"First stage [\d.]+ ms, rerank [\d.]+ ms", status)
    assert "30 candidates reranked" in page.inner_text("#reranked-meta")
    page.mouse.move(0, 0)
    page.screenshot(path=str(shots / "search.png"))

    # the keyboard reaches the controls and shows where it is
    page.focus("#search-query")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.id") == "search-retriever" and outline != "none"
    assert tab.outside == []
    tab.context.close()


def test_every_retriever_of_a_hybrid_index_can_be_chosen(
    browser: Browser, default_model: CrossEncoder, hybrid_index: Any
) -> None:
    with serving(create_app(default_model, index=hybrid_index)) as url:
        tab = open_tab(browser, url, LAPTOP)
        page = tab.page
        wait_text(page, "#model-name", "^default$")
        options = page.eval_on_selector_all("#search-retriever option", "os => os.map(o => o.value)")
        assert sorted(options) == ["bm25", "dense", "hybrid"]
        page.fill("#search-query", QUERY)
        page.fill("#search-depth", "20")
        page.fill("#search-k", "5")
        for name in ("dense", "hybrid", "bm25"):
            page.select_option("#search-retriever", name)
            page.press("#search-query", "Enter")
            wait_text(page, "#first-retriever", f"^{name}$")
            wait_idle(page, "#search-status")
            want = httpx.post(
                f"{url}/v1/search", json={"query": QUERY, "k": 5, "depth": 20, "retriever": name}, timeout=60
            ).json()["hits"]
            want_first = httpx.post(
                f"{url}/v1/search", json={"query": QUERY, "k": 5, "retriever": name, "rerank": False}, timeout=60
            ).json()["hits"]
            assert [h["id"] for h in hits(page, "#reranked-list")] == [h["doc_id"] for h in want], name
            assert [h["id"] for h in hits(page, "#first-list")] == [h["doc_id"] for h in want_first], name
        assert tab.outside == []
        tab.context.close()


# ---------------------------------------------------------------------- rerank mode


def test_rerank_mode_matches_the_api_shows_errors_and_copies_the_request(
    browser: Browser, base: str, shots: Path, cisi_docs: list[dict[str, Any]]
) -> None:
    docs = [" ".join(d["text"].split()).split(". ")[0] + "." for d in cisi_docs[:8]]  # first sentences
    tab = open_tab(browser, base, LAPTOP)
    page = tab.page
    wait_text(page, "#model-name", "^default$")
    page.check("#mode-rerank")
    assert page.is_visible("#rerank-panel") and not page.is_visible("#search-panel")
    page.fill("#rerank-documents", "\n".join(docs))
    assert page.inner_text("#documents-count") == "8 documents."

    # an empty query goes to the server, whose message the page shows
    page.fill("#rerank-query", "")
    page.click("#rerank-form button[type=submit]")
    error = wait_text(page, "#error", "answered 400")
    bad = httpx.post(
        f"{base}/v1/rerank", json={"query": "", "documents": docs, "return_documents": False}, timeout=HTTP_TIMEOUT
    )
    assert bad.status_code == 400 and bad.json()["message"] in error
    assert tab.posts_to("/v1/rerank") == 1

    # then a real query works, and the error goes away
    page.fill("#rerank-query", RERANK_QUERY)
    page.press("#rerank-query", "Enter")
    wait_text(page, "#rerank-status", "^8 of 8 documents")
    assert page.inner_text("#error") == ""
    body = {"query": RERANK_QUERY, "documents": docs, "return_documents": False}
    want = httpx.post(f"{base}/v1/rerank", json=body, timeout=HTTP_TIMEOUT).json()
    got = hits(page, "#rerank-list")
    assert [h["index"] for h in got] == [r["index"] for r in want["results"]]
    for g, r in zip(got, want["results"], strict=True):
        assert float(g["scores"]["ce"]) == shown(r["relevance_score"])
        assert g["text"].rstrip("…") in docs[r["index"]]
    assert page.inner_text("#rerank-status .activation") == want["meta"]["crossrank"]["activation"] == "sigmoid"
    assert "(probabilities)" in page.inner_text("#rerank-status")

    # the copied request is exact: run it and get the same answer
    page.click("#copy-python")
    wait_text(page, "#copy-status", "Copied the Python code")
    code = page.inner_text("#snippet")
    assert page.evaluate("navigator.clipboard.readText()") == code
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert [r["index"] for r in json.loads(run.stdout)["results"]] == [r["index"] for r in want["results"]]
    page.click("#copy-curl")
    wait_text(page, "#copy-status", "Copied the curl command")
    command = page.inner_text("#snippet")
    assert command.startswith(f"curl -sS -X POST '{base}/v1/rerank'")
    if shutil.which("curl"):
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
        assert [r["index"] for r in json.loads(out.stdout)["results"]] == [r["index"] for r in want["results"]]
    page.screenshot(path=str(shots / "rerank.png"), full_page=True)
    assert tab.outside == []
    tab.context.close()


# ---------------------------------------------------------------------- phone width


def test_phone_width_stacks_the_columns_without_overflow(browser: Browser, base: str, shots: Path) -> None:
    tab = open_tab(browser, base, PHONE)
    page = tab.page
    wait_text(page, "#model-name", "^default$")
    page.fill("#search-query", QUERY)
    page.fill("#search-depth", "20")
    page.fill("#search-k", "5")
    page.click("#search-form button[type=submit]")
    wait_text(page, "#search-status", "^5 results")
    no_overflow(page, PHONE["width"])
    first = page.locator("#first-column").bounding_box()
    second = page.locator("#reranked-column").bounding_box()
    assert first is not None and second is not None
    assert second["y"] >= first["y"] + first["height"] and abs(second["x"] - first["x"]) < 1
    assert first["width"] <= PHONE["width"]
    page.mouse.move(0, 0)
    # where the first-stage column ends and the reranked one starts
    page.eval_on_selector("#reranked-column", "e => window.scrollTo(0, e.getBoundingClientRect().top + scrollY - 420)")
    page.screenshot(path=str(shots / "phone.png"))
    page.check("#mode-rerank")
    page.fill("#rerank-documents", "A cat is a small feline.\nParis is in France.")
    page.click("#copy-curl")
    wait_text(page, "#copy-status", "curl command")
    no_overflow(page, PHONE["width"])  # the snippet scrolls inside its box
    assert tab.outside == []
    tab.context.close()


# ---------------------------------------------------------------------- keys and a full queue


def test_api_key_and_full_queue_errors_are_messages_and_the_page_recovers(
    browser: Browser, default_model: CrossEncoder
) -> None:
    # one place in the queue, and a batcher that holds a request up to a second waiting for others
    config = ServeConfig(queue_size=1, max_wait_ms=1000)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serving(create_app(default_model, config=config, api_keys=ApiKeys([KEY]))) as url:
        assert (
            httpx.get(f"{url}/", timeout=HTTP_TIMEOUT).status_code == 200
            and httpx.get(f"{url}/static/app.js", timeout=HTTP_TIMEOUT).status_code == 200
        )
        assert httpx.get(f"{url}/v1/models", timeout=HTTP_TIMEOUT).status_code == 401
        tab = open_tab(browser, url, LAPTOP)
        page = tab.page
        wait_text(page, "#error", "answered 401")
        assert page.inner_text("#model-name") == "needs an API key"
        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")
        wait_text(page, "#model-name", "^default$")
        assert page.inner_text("#error") == ""
        assert page.is_disabled("#mode-search") and page.is_visible("#rerank-panel")  # no index served
        assert "--index" in page.inner_text("#mode-note")
        page.fill("#rerank-query", RERANK_QUERY)
        page.fill("#rerank-documents", "Indexing by computer.\n\nA cat is a small feline.\nParis is in France.")
        page.check("input[name=split][value=blank]")
        assert page.inner_text("#documents-count") == "2 documents."

        stop = threading.Event()

        def occupy() -> None:  # keep the one place taken by tiny requests
            with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
                while not stop.is_set():
                    if client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 429:
                        time.sleep(0.02)

        threads = [threading.Thread(target=occupy, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 20
            while (
                metric(httpx.get(f"{url}/metrics", headers=auth, timeout=HTTP_TIMEOUT).text, "crossrank_queue_depth")
                < 1
            ):
                assert time.monotonic() < deadline, "the queue never filled"
                time.sleep(0.01)
            error = ""
            for _ in range(5):  # the page's request may, rarely, slip in between two of the tiny ones
                page.click("#rerank-form button[type=submit]")
                wait_idle(page, "#rerank-status")
                error = page.inner_text("#error")
                if "429" in error:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert "answered 429" in error and "queue is full" in error and "retry in" in error
        # the queue is free again: the same page, the same form, now ranks
        page.click("#rerank-form button[type=submit]")
        wait_text(page, "#rerank-status", "^2 of 2 documents")
        assert page.inner_text("#error") == ""
        body = {
            "query": RERANK_QUERY,
            "documents": ["Indexing by computer.", "A cat is a small feline.\nParis is in France."],
            "return_documents": False,
        }
        want = httpx.post(f"{url}/v1/rerank", json=body, headers=auth, timeout=HTTP_TIMEOUT).json()
        assert [h["index"] for h in hits(page, "#rerank-list")] == [r["index"] for r in want["results"]]
        assert tab.outside == [] and tab.posts_to("/v1/rerank") >= 2
        tab.context.close()
