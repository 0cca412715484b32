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
        rejected: requests refused before scoring, by ``reason`` (``queue_full``, ``timeout``,
            ``shutting_down``).
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
        self.rejected = Counter("crossrank_rejected", "Requests refused before scoring.", ["reason"], registry=r)

    def render(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)
