"""Overload: admission by deadline, Retry-After as a kept promise, places freed at once, abandoned work dropped.

The admission rule is plain arithmetic, so it is checked on a simulated server draining a queue at
a constant rate (every time is given, nothing is measured). The server side uses the real default
model behind a real uvicorn socket, as tests/test_serve.py does, and asserts counts, never times.
"""

from __future__ import annotations

import heapq
import itertools
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from crossrank import CrossEncoder
from crossrank.serve import ServeConfig, create_app
from crossrank.serve.admission import HEADROOM, LEAD_S, Admission
from test_serve import HTTP_TIMEOUT, metric, passages, serving

# ---------------------------------------------------------------------- the rule, on a simulated server


class Drain:
    """A server that does ``rate`` work per second, first come first served, never idle while work waits."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.busy_until = 0.0

    def ahead(self, now: float) -> float:
        return max(0.0, self.busy_until - now) * self.rate

    def take(self, now: float, work: float) -> float:
        """Queue ``work``; return when it is done."""
        self.busy_until = max(self.busy_until, now) + work / self.rate
        return self.busy_until


def test_a_burst_is_admitted_up_to_the_deadline_and_the_rest_told_when_to_return() -> None:
    adm, server = Admission(15.0), Drain(rate=100.0)
    decisions = []
    for i in range(10):  # ten requests of 2.5 s of work at once
        d = adm.decide(b"r%d" % i, 250.0, ahead=server.ahead(0.0), rate=100.0, now=0.0, room=True)
        if d.admitted:
            server.take(0.0, 250.0)
        decisions.append(d)
    admitted = [d for d in decisions if d.admitted]
    assert len(admitted) == int(HEADROOM * 15.0 / 2.5)  # all the work that ends within the headroom
    refused = [d for d in decisions if not d.admitted]
    assert all(d.reason == "over_capacity" for d in refused)
    waits = [d.retry_after for d in refused]
    # the first is told to come back when the queue ahead is down to the lead; each next one a request later
    assert waits[0] == pytest.approx(len(admitted) * 2.5 - LEAD_S, abs=1)
    assert all(b is not None and a is not None and b > a for a, b in itertools.pairwise(waits))
    assert adm.promises == len(refused)


def test_a_full_queue_refuses_even_when_there_is_time() -> None:
    d = Admission(15.0).decide(b"x", 10.0, ahead=0.0, rate=100.0, now=0.0, room=False)
    assert not d.admitted and d.reason == "queue_full" and d.retry_after is not None and d.retry_after >= 1


def test_a_request_too_large_for_the_timeout_runs_only_on_an_idle_server() -> None:
    adm = Admission(1.0)
    assert adm.decide(b"big", 500.0, ahead=0.0, rate=100.0, now=0.0, room=True).admitted  # 5 s > 1 s: alone
    d = adm.decide(b"big2", 500.0, ahead=10.0, rate=100.0, now=0.0, room=True)
    assert not d.admitted and d.retry_after is not None


@pytest.mark.parametrize(
    ("clients", "per_client", "sizes"),
    [(64, 3, (250.0,)), (40, 2, (40.0, 250.0, 900.0)), (8, 5, (1.0, 1000.0))],
)
def test_every_client_that_honours_retry_after_is_admitted_and_answered_in_time(
    clients: int, per_client: int, sizes: tuple[float, ...]
) -> None:
    """Clients send their requests one after another and honour Retry-After to the second.

    At a constant rate the promises hold: a client back when told is always admitted, nobody is
    admitted who then misses the deadline, everyone is served, and the server does not idle.
    """
    timeout, rate = 15.0, 100.0
    adm, server = Admission(timeout), Drain(rate)
    events: list[tuple[float, int, int, int]] = [(0.0, c, 0, 0) for c in range(clients)]  # (time, client, i, try)
    heapq.heapify(events)
    honoured = admitted_after_honour = served = 0
    work_done = 0.0
    while events:
        now, c, i, tries = heapq.heappop(events)
        work = sizes[(c + i) % len(sizes)]
        d = adm.decide(b"%d/%d" % (c, i), work, ahead=server.ahead(now), rate=rate, now=now, room=True)
        if tries:
            honoured += 1
            admitted_after_honour += d.admitted
        if d.admitted:
            done = server.take(now, work)
            assert done <= now + timeout + 1e-6, "admitted, then past its deadline"
            served += 1
            work_done += work
            if i + 1 < per_client:
                heapq.heappush(events, (done, c, i + 1, 0))  # the next request as soon as this one is answered
        else:
            assert d.retry_after is not None and d.retry_after >= 1
            heapq.heappush(events, (now + d.retry_after, c, i, tries + 1))
    assert served == clients * per_client
    assert honoured > 0 and admitted_after_honour == honoured
    # the model kept busy: the last answer came within a few seconds of the work's own length
    assert server.busy_until <= work_done / rate + 2 * LEAD_S + max(sizes) / rate


def test_a_new_request_does_not_take_a_promised_place() -> None:
    adm, server = Admission(15.0), Drain(rate=100.0)
    for i in range(4):
        assert adm.decide(b"a%d" % i, 300.0, ahead=server.ahead(0.0), rate=100.0, now=0.0, room=True).admitted
        server.take(0.0, 300.0)
    told = adm.decide(b"late", 300.0, ahead=server.ahead(0.0), rate=100.0, now=0.0, room=True)
    assert not told.admitted and told.retry_after is not None
    back = float(told.retry_after)
    # at that moment someone else arrives first: it queues behind the promise, the promised one gets in
    other = adm.decide(b"new", 300.0, ahead=server.ahead(back), rate=100.0, now=back, room=True)
    assert not other.admitted and other.retry_after is not None and other.retry_after > 0
    assert adm.decide(b"late", 300.0, ahead=server.ahead(back), rate=100.0, now=back, room=True).admitted


def test_a_promise_nobody_claims_is_dropped() -> None:
    adm = Admission(15.0, grace_s=2.0)
    d = adm.decide(b"gone", 300.0, ahead=1500.0, rate=100.0, now=0.0, room=True)
    assert not d.admitted and d.retry_after is not None and adm.promises == 1
    adm.decide(b"other", 1.0, ahead=0.0, rate=100.0, now=d.retry_after + 2.5, room=True)
    assert adm.promises == 0


# ---------------------------------------------------------------------- a real server


def test_a_timed_out_request_frees_its_place_at_once(default_model: CrossEncoder) -> None:
    # one place; a request far larger than the timeout allows takes it, gets 504, and gives it back
    config = ServeConfig(queue_size=1, timeout_s=0.25)
    docs = passages(1000)
    with serving(create_app(default_model, config=config)) as base:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "what is a cat", "documents": docs}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 504
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
        assert metric(text, "crossrank_queue_depth") == 0  # its model work may still be in its last call
        assert metric(text, "crossrank_expired_total") == 1
        assert 0 < metric(text, "crossrank_dropped_pairs_total") <= 1000  # the rest of it never runs
        # the next request gets the place at once (it may still run out of time behind that last call)
        r = httpx.post(f"{base}/v1/rerank", json={"query": "what is a cat", "documents": docs[:1]}, timeout=60)
        assert r.status_code in (200, 504)
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric(text, "crossrank_admitted_total") == 2
    assert metric(text, "crossrank_rejected_total", reason="queue_full") == 0
    assert metric(text, "crossrank_queue_depth") == 0


def test_the_work_of_a_client_that_left_is_not_run(default_model: CrossEncoder) -> None:
    # calls of 16 pairs: a request of 400 documents takes 25 calls, and is checked between them
    config = ServeConfig(max_batch_pairs=16, timeout_s=300)
    docs = passages(400)
    body = json.dumps({"query": "what is a cat", "documents": docs}).encode()
    with serving(create_app(default_model, config=config)) as base:
        url = urlsplit(base)
        head = (
            f"POST /v1/rerank HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((url.hostname, url.port), timeout=HTTP_TIMEOUT) as sock:
            sock.sendall(head + body)
            wait_for(base, lambda t: metric(t, "crossrank_pairs_total") >= 16)  # it is being scored
        # the client hung up: the server notices, answers nobody (499) and drops the rest
        text = wait_for(base, lambda t: metric(t, "crossrank_dropped_total") == 1)
        # the next request is served: the worker has moved on past the abandoned one
        r = httpx.post(f"{base}/v1/rerank", json={"query": "what is a cat", "documents": docs[:2]}, timeout=60)
        assert r.status_code == 200
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    scored = metric(text, "crossrank_pairs_total")
    never = metric(text, "crossrank_dropped_pairs_total")
    assert never > 0 and scored < 402  # most of the 400 pairs were never scored
    assert scored + never == 402  # every pair was either scored or dropped, none twice
    assert metric(text, "crossrank_requests_total", route="/v1/rerank", status="499") == 1
    assert metric(text, "crossrank_queue_depth") == 0 and metric(text, "crossrank_expired_total") == 0


def wait_for(base: str, ok: object, seconds: float = 120) -> str:
    """Return the server's metrics once ``ok(text)`` holds; fail if it never does (a bound, not a timing)."""
    assert callable(ok)
    deadline = time.monotonic() + seconds
    while True:
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
        if ok(text):
            return text
        assert time.monotonic() < deadline, "the server never reached the expected state"
        time.sleep(0.01)
