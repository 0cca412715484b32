"""Replicated serving on Ray Serve: the app of ``crossrank serve``, in as many replicas as traffic needs.

Each replica builds the very FastAPI app :func:`crossrank.serve.create_app` returns (same routes,
schemas, limits, errors and metrics), loads the model once, and merges concurrent requests with
Ray Serve's own request batching (``@serve.batch``, sized in pairs) instead of the built-in worker
thread. Ray Serve's proxy spreads requests over the replicas, scales them between the configured
bounds, and drains a replica's ongoing requests before it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Hashable
from concurrent.futures import Future
from typing import Any

from crossrank._deps import require
from crossrank.errors import ConfigError, CrossrankError, InputError
from crossrank.serve.batcher import Batcher, Job, PairsWork, SearchWork
from crossrank.serve.config import ApiKeys, ServeConfig
from crossrank.serve.metrics import Metrics
from crossrank.serve.model import ServedModel
from crossrank.settings import SearchSettings, load_settings

__all__ = ["RayServeBatcher", "build_application", "deployment_options", "serve_on_ray"]

log = logging.getLogger("crossrank.serve")

_Work = PairsWork | SearchWork


class RayServeBatcher(Batcher):
    """A :class:`Batcher` whose merging is done by Ray Serve's ``@serve.batch``.

    Requests wait in Ray Serve's batch queue for at most ``max_wait_ms``; a batch holds at most
    ``max_batch_pairs`` pairs (a request larger than that runs alone). The batch runs off the event
    loop, one at a time, with the same code as the built-in batcher, so scores, truncation and
    metrics are the same. The admission rules are the built-in ones: at most ``queue_size``
    requests waiting or running (else 429), and none once the replica is draining.
    """

    def __init__(self, model: ServedModel, config: ServeConfig, metrics: Metrics) -> None:
        super().__init__(model, config, metrics)
        serve = require("ray.serve", feature="serving on Ray")
        cap = config.max_batch_pairs if config.batching else 1

        def pairs(works: list[_Work]) -> int:
            return sum(min(w.size, cap) for w in works)

        self._batched = serve.batch(
            max_batch_size=cap,
            batch_wait_timeout_s=config.max_wait_ms / 1000 if config.batching else 0.0,
            batch_size_fn=pairs,
        )(self._run_works)
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """Take requests (Ray Serve's batch queue starts with the first one)."""
        self._started = True

    @property
    def running(self) -> bool:
        """Return whether new work is accepted."""
        return self._started and not self._closing

    def submit(self, work: PairsWork | SearchWork) -> Future[Any]:
        """Queue ``work`` in Ray Serve's batch queue; return the future (an asyncio task) of its result.

        Raises:
            QueueFullError: ``queue_size`` requests are already waiting or running.
            ShuttingDownError: the replica is draining.
        """
        self._admit(work)  # on the event loop, the only thread that counts
        task = asyncio.get_running_loop().create_task(self._one(work))
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._pending -= 1
            self._pending_pairs -= work.size
            self.metrics.queue_depth.set(self._pending)

        task.add_done_callback(done)
        return task  # type: ignore[return-value]  # awaited through asyncio.wrap_future, which takes both

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work and wait (up to ``timeout`` s) for the accepted requests to finish."""
        self._closing = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)

    async def _one(self, work: _Work) -> Any:
        outcome = await self._batched(work)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _run_works(self, works: list[_Work]) -> list[Any]:
        """Run one Ray Serve batch: group compatible works, run each group as the built-in batcher does."""
        jobs = [Job(work, Future()) for work in works]
        for job in jobs:
            job.future.set_running_or_notify_cancel()
        groups: dict[Hashable, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.work.key, []).append(job)
        for group in groups.values():
            try:
                await asyncio.to_thread(self._execute, group)
            except Exception as err:  # every job gets an answer
                # a request's own bad input is answered with 400 and logged with it, never as a failure
                level = logging.DEBUG if isinstance(err, InputError | ConfigError) else logging.ERROR
                log.log(level, "batch of %d requests failed: %s", len(group), type(err).__name__)
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(err)
        for job in jobs:
            if not job.future.done():  # never expected: the built-in code answers every job it is given
                job.future.set_exception(CrossrankError("the request was not answered; retry"))
        return [job.future.exception() or job.future.result() for job in jobs]


# ---------------------------------------------------------------------- the deployment


class CrossrankReplica:
    """One Ray Serve replica: the ``crossrank serve`` app over a model loaded once (an ingress deployment)."""

    def __init__(
        self,
        model: str,
        index: str | None,
        config: ServeConfig,
        api_keys: ApiKeys | None,
        backend: str,
        max_length: int | None,
        threads: int | None,
        profile: str | None = None,
        settings: SearchSettings | None = None,
    ) -> None:
        from crossrank.rerank.config import ScoringConfig
        from crossrank.rerank.cross_encoder import CrossEncoder
        from crossrank.serve.app import create_app

        reranker = CrossEncoder(
            model,
            backend=backend,
            config=ScoringConfig(max_length=max_length, threads=threads),
        )
        self._app = create_app(
            reranker,
            index=index,
            config=config,
            api_keys=api_keys,
            batcher=RayServeBatcher,
            profile=profile,
            settings=settings,
        )
        self.pid = os.getpid()

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


def deployment_options(
    *,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_ongoing_requests: float = 2.0,
    max_ongoing_requests: int = 16,
    threads_per_replica: int = 1,
    graceful_shutdown_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Return Ray Serve deployment options: a fixed replica count, or autoscaling between bounds.

    Raises:
        ConfigError: a count is not positive, or the bounds are inverted.
    """
    if replicas < 1 or threads_per_replica < 1 or max_ongoing_requests < 1:
        raise ConfigError(
            f"replicas, threads per replica and max ongoing requests must be >= 1 "
            f"(got {replicas}, {threads_per_replica}, {max_ongoing_requests})"
        )
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": threads_per_replica},
        "graceful_shutdown_timeout_s": graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if min_replicas is None and max_replicas is None:
        options["num_replicas"] = replicas
        return options
    low = replicas if min_replicas is None else min_replicas
    high = max(low, replicas) if max_replicas is None else max_replicas
    if low < 0 or high < 1 or low > high:
        raise ConfigError(f"autoscaling needs 0 <= min_replicas <= max_replicas, max >= 1 (got {low}, {high})")
    if target_ongoing_requests <= 0:
        raise ConfigError(f"target_ongoing_requests must be > 0 (got {target_ongoing_requests})")
    options["autoscaling_config"] = {
        "min_replicas": low,
        "initial_replicas": min(max(replicas, low), high),
        "max_replicas": high,
        "target_ongoing_requests": target_ongoing_requests,
    }
    return options


def build_application(
    model: str = "default",
    *,
    index: str | os.PathLike[str] | None = None,
    config: ServeConfig | None = None,
    api_keys: ApiKeys | None = None,
    backend: str = "auto",
    max_length: int | None = None,
    options: dict[str, Any] | None = None,
    profile: str | os.PathLike[str] | None = None,
    settings: SearchSettings | str | os.PathLike[str] | None = None,
) -> Any:
    """Return the bound Ray Serve application; run it with ``serve.run(app, route_prefix="/")``.

    Args:
        model: what each replica loads (a built-in name, a folder reachable from every node, a hub id).
        index: an index folder reachable from every node, for ``POST /v1/search``.
        config: limits, batching and timeouts, as for ``crossrank serve``.
        api_keys: keys accepted as ``Authorization: Bearer``.
        backend: the engine each replica runs.
        max_length: most tokens per pair.
        options: from :func:`deployment_options`.
        profile: a reference profile reachable from every node; each replica watches its own
            requests' drift from it (``GET /v1/monitor`` answers for the replica it reaches).
        settings: what ``POST /v1/search`` does when a request leaves ``depth`` or ``rerank`` out
            (a ``crossrank tune`` file, read here, or :class:`~crossrank.settings.SearchSettings`).

    Example:
        >>> from ray import serve  # doctest: +SKIP
        >>> serve.start(http_options={"host": "127.0.0.1", "port": 8000})  # doctest: +SKIP
        >>> serve.run(build_application("default", options=deployment_options(replicas=2)))  # doctest: +SKIP
    """
    serve = require("ray.serve", feature="serving on Ray")
    opts = dict(options or deployment_options())
    threads = int(opts.get("ray_actor_options", {}).get("num_cpus", 1)) or None
    ingress = serve.ingress()(CrossrankReplica)
    deployment = serve.deployment(name="crossrank")(ingress).options(**opts)
    return deployment.bind(
        str(model),
        None if index is None else str(index),
        config or ServeConfig(),
        api_keys,
        backend,
        max_length,
        threads,
        None if profile is None else str(profile),
        load_settings(settings) if isinstance(settings, (str, os.PathLike)) else settings,
    )


def serve_on_ray(
    model: str = "default",
    *,
    index: str | os.PathLike[str] | None = None,
    config: ServeConfig | None = None,
    api_keys: ApiKeys | None = None,
    backend: str = "auto",
    max_length: int | None = None,
    options: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    address: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    settings: SearchSettings | str | os.PathLike[str] | None = None,
) -> None:
    """Run the app on Ray Serve until SIGINT or SIGTERM, then drain the replicas and stop.

    Joins the cluster at ``address`` (or ``$RAY_ADDRESS``), or starts a local one.

    Raises:
        InputError: the cluster cannot be reached.
        MissingDependencyError: ``crossrank[ray]`` is not installed.
    """
    import signal
    import threading

    ray = require("ray", feature="serving on Ray")
    serve = require("ray.serve", feature="serving on Ray")
    from crossrank.models.source import resolve
    from crossrank.scale.batch import connect

    resolve(str(model))  # an unknown model fails here, before any replica starts
    joined = address is not None or "RAY_ADDRESS" in os.environ
    connect(ray, address, 0)
    serve.start(http_options={"host": host, "port": port})
    app = build_application(
        model,
        index=index,
        config=config,
        api_keys=api_keys,
        backend=backend,
        max_length=max_length,
        options=options,
        profile=profile,
        settings=settings,
    )
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.run(app, name="crossrank", route_prefix="/", blocking=False)
        log.warning(
            "crossrank serving %s on http://%s:%d through Ray Serve (%s)", model, host, port, _scale_text(options)
        )
        stop.wait()
        log.warning("draining the replicas")
        serve.delete("crossrank")  # each replica finishes its ongoing requests first
    finally:
        if not joined:  # a cluster started here goes with us; a shared one keeps Serve for its other apps
            serve.shutdown()
        ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _scale_text(options: dict[str, Any] | None) -> str:
    opts = options or {}
    auto = opts.get("autoscaling_config")
    if auto:
        return f"autoscaling {auto['min_replicas']}..{auto['max_replicas']} replicas"
    n = opts.get("num_replicas", 1)
    return f"{n} replica{'' if n == 1 else 's'}"
