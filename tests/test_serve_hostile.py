"""The HTTP service against hostile callers, over real loopback sockets.

DNS rebinding (a foreign ``Host``), bodies Python's JSON parser takes but JSON is not (NaN,
infinities, lone surrogates), connections that trickle their headers or send less body than
they declare, and what the log says about clients' mistakes.
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossrank import CrossEncoder
from crossrank.errors import ConfigError
from crossrank.serve import ApiKeys, ServeConfig, create_app
from crossrank.serve.config import bound_hosts
from crossrank.serve.server import header_deadline_protocol
from test_serve import EXAMPLES, error_message, metric, passages, serving

HTTP_TIMEOUT = 120.0
# a raw socket gives up waiting for the server after this long: far past every deadline configured here
SOCKET_WAIT_S = 60.0


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from crossrank.retrieve.index import Index

    return Index.build(tmp_path_factory.mktemp("hostile") / "dl19-bm25", EXAMPLES / "corpus.jsonl", retriever="bm25")


@pytest.fixture(scope="module")
def base(default_model: CrossEncoder, index: Any) -> Iterator[str]:
    with serving(create_app(default_model, index=index)) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------------- DNS rebinding


ROUTES = {
    "/v1/rerank": {"query": "library", "documents": ["a library lends books"], "return_documents": True},
    "/v2/rerank": {"query": "library", "documents": ["a library lends books"], "return_documents": True},
    "/rerank": {"query": "library", "texts": ["a library lends books"], "return_text": True},
    "/v1/score": {"pairs": [["library", "a library lends books"]]},
    "/v1/search": {"query": "library", "k": 3, "depth": 10},
}


def test_a_foreign_host_gets_421_in_the_route_shape_with_or_without_keys(
    default_model: CrossEncoder, index: Any, base: str
) -> None:
    port = port_of(base)
    foreign = ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.evil.com")
    for path, body in ROUTES.items():
        for host in foreign:
            r = httpx.post(f"{base}{path}", json=body, headers={"Host": host}, timeout=HTTP_TIMEOUT)
            assert r.status_code == 421, (path, host, r.text)
            message = error_message(path, r.json())  # exactly the route's error shape
            assert "DNS rebinding" in message and "--allowed-host" in message
            assert "lends books" not in r.text
        ok = httpx.post(f"{base}{path}", json=body, timeout=HTTP_TIMEOUT)
        assert ok.status_code == 200, path
    # the loopback names and the bound address, with or without a port, any case
    for host in ("localhost", f"localhost:{port}", "LOCALHOST.", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", "[::1]:1"):
        r = httpx.get(f"{base}/v1/models", headers={"Host": host}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, host
    for host in ("attacker.example", "::1", "[::1", "localhost:port", "127.0.0.2"):
        assert httpx.get(f"{base}/v1/models", headers={"Host": host}, timeout=HTTP_TIMEOUT).status_code == 421, host
    # probes answer under any name: a load balancer sends the one it knows, and they hold no data
    for path in ("/health", "/ready"):
        assert httpx.get(f"{base}{path}", headers={"Host": "lb.internal"}, timeout=HTTP_TIMEOUT).status_code == 200
    text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric(text, "crossrank_requests_total", route="/v1/search", status="421") == len(foreign)

    # with keys: the Host is checked first, so even a valid key does not help a rebinding page
    keys = ApiKeys(["rebinding-test-key-1"])
    with serving(create_app(default_model, index=index, api_keys=keys)) as url:
        auth = {"Authorization": "Bearer rebinding-test-key-1"}
        r = httpx.post(
            f"{url}/v1/search", json=ROUTES["/v1/search"], headers={**auth, "Host": "attacker.example"}, timeout=60
        )
        assert r.status_code == 421 and r.json()["error"]["type"] == "misdirected"
        r = httpx.post(f"{url}/v2/rerank", json=ROUTES["/v2/rerank"], headers={"Host": "x.example"}, timeout=60)
        assert r.status_code == 421 and set(r.json()) == {"message"}
        assert httpx.post(f"{url}/v1/search", json=ROUTES["/v1/search"], headers=auth, timeout=60).status_code == 200


def test_allowed_hosts_add_names_subdomains_or_any(default_model: CrossEncoder) -> None:
    config = ServeConfig(allowed_hosts=("rerank.example.com", "*.corp.example", "10.1.2.3", "[fd00::5]"))
    with serving(create_app(default_model, config=config)) as url:
        for host, status in [
            ("rerank.example.com", 200),
            ("Rerank.Example.Com:443", 200),
            ("a.corp.example", 200),
            ("b.a.corp.example:8080", 200),
            ("10.1.2.3:8080", 200),
            ("[fd00::5]:80", 200),
            ("corp.example", 421),
            ("evilcorp.example", 421),
            ("example.com", 421),
            ("rerank.example.com.evil", 421),
        ]:
            r = httpx.get(f"{url}/v1/models", headers={"Host": host}, timeout=HTTP_TIMEOUT)
            assert r.status_code == status, host
    with serving(create_app(default_model, config=ServeConfig(allowed_hosts=("*",)))) as url:
        r = httpx.post(
            f"{url}/rerank", json=ROUTES["/rerank"], headers={"Host": "anything.example"}, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 200


def test_the_bound_address_is_answered_and_no_other(default_model: CrossEncoder) -> None:
    # another loopback address stands for a machine's LAN address: the one the connection arrived on
    with serving(create_app(default_model), host="127.0.0.2") as url:
        port = port_of(url)
        assert httpx.get(f"{url}/v1/models", timeout=HTTP_TIMEOUT).status_code == 200  # Host: 127.0.0.2:port
        r = httpx.get(f"{url}/v1/models", headers={"Host": f"127.0.0.3:{port}"}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 421
    assert bound_hosts("127.0.0.2") == () and bound_hosts("::") == (socket.gethostname(),)
    assert bound_hosts("rerank.internal") == ("rerank.internal",)


def test_allowed_hosts_are_validated() -> None:
    config = ServeConfig(allowed_hosts=("a.example", "*.b.example", "*", "::1", "[::1]", "10.0.0.1"))
    assert ServeConfig.from_dict(config.to_dict()) == config
    for bad in ("http://a.example", "a.example:8080", "a.example/x", "*a.example", "a b", "", "a..b", "[a.example]"):
        with pytest.raises(ConfigError, match="allowed host must be") as info:
            ServeConfig(allowed_hosts=(bad,))
        assert repr(bad) in str(info.value)
    with pytest.raises(ConfigError, match="tuple"):
        ServeConfig(allowed_hosts="a.example")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- bodies that are not JSON


HOSTILE = {
    "NaN": '"x": NaN',
    "-Infinity": '"x": -Infinity',
    "Infinity": '"x": Infinity',
    "too large for a float": '"x": 1e999',
    "lone UTF-16 surrogate": '"x": "\\ud800"',
    "lone UTF-16 surrogate ": '"\\udfff": 1',  # in a key
    "lone UTF-16 surrogate  ": '"x": {"y": ["a", "\\udc00b"]}',  # nested
    "more than 4300 digits": '"x": ' + "9" * 5000,
    "too deeply": '"x": ' + "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("path", list(ROUTES))
def test_nan_infinity_and_lone_surrogates_get_400_in_the_route_shape(base: str, path: str) -> None:
    valid = json.dumps(ROUTES[path])[:-1]
    headers = {"content-type": "application/json"}
    for needle, extra in HOSTILE.items():
        r = httpx.post(f"{base}{path}", content=f"{valid}, {extra}}}".encode(), headers=headers, timeout=HTTP_TIMEOUT)
        assert r.status_code == 400, (needle, r.text)
        message = error_message(path, r.json())
        assert message.startswith("invalid request body: ") and needle.strip() in message, message
        assert path != "/rerank" or r.json()["error_type"] == "validation"
    # a surrogate pair is a real character (an emoji); an escaped backslash before `ud800` is plain text
    for fine in ('"x": "\\ud83d\\ude00"', '"x": "\\\\ud800"', '"x": 1e308, "y": -0.0'):
        r = httpx.post(f"{base}{path}", content=f"{valid}, {fine}}}".encode(), headers=headers, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, (fine, r.text)
    text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric(text, "crossrank_requests_total", route=path, status="500") == 0


def test_the_red_team_request_echoes_no_nan(base: str) -> None:
    body = b'{"query":"cat","documents":[{"text":"a cat","x":NaN}],"return_documents":true}'
    r = httpx.post(f"{base}/v1/rerank", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "NaN" in r.json()["message"] and r.json()["message"] == r.json()["detail"]
    # the same document with a finite value is echoed back as sent
    body = b'{"query":"cat","documents":[{"text":"a cat","x":1.5}],"return_documents":true}'
    r = httpx.post(f"{base}/v1/rerank", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200 and r.json()["results"][0]["document"] == {"text": "a cat", "x": 1.5}


# ---------------------------------------------------------------------- slow clients


def closed_by_server(sock: socket.socket, trickle: bytes = b"") -> float:
    """Send ``trickle`` a byte every 50 ms (or nothing) until the server closes; return the seconds it took."""
    start = time.monotonic()
    sock.setblocking(False)
    sent = 0
    while time.monotonic() - start < SOCKET_WAIT_S:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - start
            except ConnectionResetError:
                return time.monotonic() - start
    raise AssertionError(f"the server kept the connection open for {SOCKET_WAIT_S} s ({sent} bytes trickled)")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:]))
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_headers_trickled_past_the_deadline_close_the_connection(default_model: CrossEncoder, impl: str) -> None:
    if impl == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base_protocol
    else:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base_protocol
    deadline = 1.0
    config = ServeConfig(header_timeout_s=deadline)
    protocol = header_deadline_protocol(deadline, base_protocol)
    with serving(create_app(default_model, config=config), http=protocol) as url:
        address = ("127.0.0.1", port_of(url))
        # headers sent in two parts within the deadline are answered, and again on the kept-alive connection
        with socket.create_connection(address, timeout=SOCKET_WAIT_S) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(deadline / 4)
            sock.sendall(b"\r\n")
            assert read_response(sock)[0] == 200
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock)[0] == 200
            # then a request trickled a byte every 50 ms never completes: cut off at the deadline
            took = closed_by_server(sock, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000)
            assert took >= deadline * 0.9  # not before the deadline (the previous response re-armed it)
        with socket.create_connection(address, timeout=SOCKET_WAIT_S) as sock:  # a trickle from the start
            trickle = b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 800
            assert closed_by_server(sock, trickle) >= deadline * 0.9
        with socket.create_connection(address, timeout=SOCKET_WAIT_S) as sock:  # a connection that sends nothing
            assert closed_by_server(sock) >= deadline * 0.9
        assert httpx.get(f"{url}/health", timeout=HTTP_TIMEOUT).status_code == 200  # the server goes on


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes(
    default_model: CrossEncoder, path: str
) -> None:
    deadline = 1.0
    with serving(create_app(default_model, config=ServeConfig(body_timeout_s=deadline))) as url:
        address = ("127.0.0.1", port_of(url))
        with socket.create_connection(address, timeout=SOCKET_WAIT_S) as sock:
            start = time.monotonic()
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n".encode()
                + b'{"query": "cat", '
            )
            status, headers, body = read_response(sock)
            took = time.monotonic() - start
            assert status == 408 and headers["connection"] == "close" and took >= deadline * 0.9
            message = error_message(path, json.loads(body))
            assert f"did not arrive within {deadline:g} s" in message
            assert closed_by_server(sock) < SOCKET_WAIT_S
        # a body trickled slower than the deadline allows gets the same answer
        with socket.create_connection(address, timeout=SOCKET_WAIT_S) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 400\r\n\r\n".encode())
            closed_by_server(sock, b" " * 400)
        text = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
        assert metric(text, "crossrank_requests_total", route=path, status="408") == 2
        docs = {"/v1/rerank": {"documents": ["a cat"]}, "/rerank": {"texts": ["a cat"]}}[path]
        assert httpx.post(f"{url}{path}", json={"query": "cat", **docs}, timeout=HTTP_TIMEOUT).status_code == 200


def test_a_client_that_hangs_up_mid_body_is_counted_as_499_not_500(default_model: CrossEncoder) -> None:
    with serving(create_app(default_model)) as url:
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=SOCKET_WAIT_S) as sock:
            sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
        deadline = time.monotonic() + SOCKET_WAIT_S
        while True:  # the server notices the hang-up on its own time
            text = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
            if metric(text, "crossrank_requests_total", route="/v2/rerank", status="499") == 1:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert metric(text, "crossrank_requests_total", route="/v2/rerank", status="500") == 0


# ---------------------------------------------------------------------- what is logged, timed and shown


def test_client_errors_are_logged_at_info_never_error(
    default_model: CrossEncoder, index: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="crossrank")
    long_query = "library " * 600  # longer than the model's 512 tokens: refused by the pipeline's reranker
    with serving(create_app(default_model, index=index, config=ServeConfig(body_timeout_s=1.0))) as url:
        for path, body, status in [
            ("/v1/search", {"query": long_query, "k": 3, "depth": 10}, 400),
            ("/v2/rerank", {"query": long_query, "documents": ["a"]}, 400),
            ("/v2/rerank", {"query": "q", "documents": [{"text": "a"}], "rank_fields": []}, 400),
            ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400),
        ]:
            assert httpx.post(f"{url}{path}", json=body, timeout=HTTP_TIMEOUT).status_code == status, path
        r = httpx.post(f"{url}/v1/score", content=b'{"pairs": NaN}', timeout=HTTP_TIMEOUT)
        assert r.status_code == 400
        assert httpx.get(f"{url}/v1/models", headers={"Host": "a.example"}, timeout=HTTP_TIMEOUT).status_code == 421
    request_lines = [r.getMessage() for r in caplog.records if r.name == "crossrank.serve"]
    assert sum(" 400 " in line for line in request_lines) == 5 and any(" 421 " in x for x in request_lines)
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert long_query.strip() not in caplog.text


def test_cutting_to_max_tokens_per_doc_is_reported_apart_from_queue_time(
    default_model: CrossEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crossrank.serve")
    docs = passages(200)
    with serving(create_app(default_model, config=ServeConfig(max_wait_ms=0))) as url:
        r = httpx.post(
            f"{url}/v2/rerank",
            json={"query": "what is a cat", "documents": docs, "max_tokens_per_doc": 16},
            timeout=HTTP_TIMEOUT,
        )
        meta = r.json()["meta"]["crossrank"]
        assert r.status_code == 200 and len(meta["truncated"]) == 200
        assert meta["tokenize_ms"] > 0 and abs(int(r.headers["x-tokenization-time"]) - meta["tokenize_ms"]) <= 1
        assert {"queue_ms", "tokenize_ms", "inference_ms"} <= set(meta)
        r = httpx.post(f"{url}/rerank", json={"query": "what is a cat", "texts": docs[:5]}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and int(r.headers["x-tokenization-time"]) >= 0  # TEI's header, on TEI's route
    line = next(r.getMessage() for r in caplog.records if "POST /v2/rerank 200" in r.getMessage())
    assert re.search(r" queue_ms=[\d.]+ tokenize_ms=[\d.]+ inference_ms=[\d.]+ ", line), line


def test_models_shows_the_index_folder_name_not_its_path(base: str, index: Any) -> None:
    card = httpx.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()["data"][0]
    assert card["index"] == "dl19-bm25" == Path(index.folder).name
    assert str(Path(index.folder).parent) not in httpx.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).text


# ---------------------------------------------------------------------- the OpenAPI explorer


def test_docs_explorer_is_served_from_this_server_only(default_model: CrossEncoder, base: str) -> None:
    from playwright.sync_api import sync_playwright

    from browser import CHROMIUM_ARGS, chromium_path

    r = httpx.get(f"{base}/docs", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self';" in r.headers["content-security-policy"]
    assert "//" not in r.text  # no CDN, no other host: every asset is a path on this server
    outside: list[str] = []
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)

            def route(req: Any) -> None:
                if req.request.url.startswith(base + "/"):
                    req.continue_()
                else:
                    outside.append(req.request.url)
                    req.abort()

            page.route("**/*", route)
            page.goto(f"{base}/docs")
            page.wait_for_selector("#operations-search-search_v1_search_post", timeout=60_000)
            shown = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert outside == [] and console == []
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/v1/search", "/v1/models"} <= set(shown)
    with serving(create_app(default_model, config=ServeConfig(docs=False))) as url:
        assert httpx.get(f"{url}/docs", timeout=HTTP_TIMEOUT).status_code == 404
