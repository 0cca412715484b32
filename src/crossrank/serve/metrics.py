"""Prometheus metrics of one server, in its own registry (no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """The server's counters, gauges and histograms.

    Attributes:
        requests: requests answered, by ``route`` (the route template, or ``other``) and ``status``.
        latency: seconds from receiving a request to answering it, by route.
        queue_depth: accepted requests waiting or running in the batcher.
        queue_wait: seconds a request waited in the queue before its batch started.
        inference: seconds each merged model call took.
        batch_pairs: pairs per merged model call.
        batch_requests: requests merged into one model call.
        pairs: pairs scored.
        tokens: tokens the model read.
        truncated: pairs whose document was cut (to the model's ``max_length`` or to the
            request's ``max_tokens_per_doc``).
        rejected: requests refused, by ``reason``: at admission ``queue_full`` (no free place),
            ``over_capacity`` (it would not finish before its deadline behind the work ahead) and
            ``shutting_down``; and ``timeout`` (answered 504).
        admitted: requests accepted into the queue.
        expired: accepted requests whose deadline passed before their scores were ready (answered
            504); what was left of their work was not run.
        dropped: accepted requests whose client left before the answer; what was left of their
            work was not run.
        dropped_pairs: pairs of expired and dropped requests that were never scored.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("crossrank_requests", "HTTP requests answered.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "crossrank_request_duration_seconds",
            "Seconds from request to answer.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("crossrank_queue_depth", "Accepted requests waiting or running.", registry=r)
        self.queue_wait = Histogram(
            "crossrank_queue_wait_seconds",
            "Seconds a request waited before its batch ran.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "crossrank_inference_seconds", "Seconds per merged model call.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_pairs = Histogram(
            "crossrank_batch_pairs", "Pairs per merged model call.", buckets=_PAIR_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "crossrank_batch_requests", "Requests merged into one model call.", buckets=_REQUEST_BUCKETS, registry=r
        )
        self.pairs = Counter("crossrank_pairs", "Pairs scored.", registry=r)
        self.tokens = Counter("crossrank_tokens", "Tokens read by the model.", registry=r)
        self.truncated = Counter("crossrank_truncated_pairs", "Pairs whose document was cut.", registry=r)
        self.rejected = Counter("crossrank_rejected", "Requests refused or timed out.", ["reason"], registry=r)
        self.admitted = Counter("crossrank_admitted", "Requests accepted into the queue.", registry=r)
        self.expired = Counter(
            "crossrank_expired", "Accepted requests whose deadline passed before their answer.", registry=r
        )
        self.dropped = Counter(
            "crossrank_dropped", "Accepted requests whose client left before the answer.", registry=r
        )
        self.dropped_pairs = Counter(
            "crossrank_dropped_pairs", "Pairs of expired or dropped requests never scored.", registry=r
        )

    def render(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)
