"""``crossrank serve``: the HTTP rerank service (Cohere, Jina and TEI compatible), run by uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from crossrank._deps import require
from crossrank.cli.app import (
    BackendOpt,
    FamilyOpt,
    InstructionOpt,
    MaxLenOpt,
    ModelOpt,
    SettingsOpt,
    TemplateOpt,
    _cli_errors,
    _load,
    _model_options,
    app,
)
from crossrank.cli.postgres_opts import (
    DsnOpt,
    IdColumnOpt,
    TableOpt,
    TextColumnsOpt,
    TsvectorColumnOpt,
    VectorColumnOpt,
    is_postgres,
    postgres_stage,
)
from crossrank.errors import InputError
from crossrank.settings import load_settings

log = logging.getLogger("crossrank.serve")


@app.command()
@_cli_errors
def serve(
    model: ModelOpt = "default",
    index: Annotated[
        Path | None, typer.Option("--index", "-i", help="An index folder to serve POST /v1/search over.")
    ] = None,
    first_stage: Annotated[
        str | None,
        typer.Option(
            help="Instead of --index: a first stage and document store to serve POST /v1/search over, "
            "as module:attr or file.py:attr (--engine local)."
        ),
    ] = None,
    retriever: Annotated[
        str | None,
        typer.Option(
            help="Instead of --index: postgres, postgres-vector or postgres-hybrid, a Postgres table to serve "
            "POST /v1/search over (--dsn, --table, ...; --engine local)."
        ),
    ] = None,
    dsn: DsnOpt = None,
    table: TableOpt = None,
    id_column: IdColumnOpt = "id",
    text_columns: TextColumnsOpt = "text",
    vector_column: VectorColumnOpt = None,
    tsvector_column: TsvectorColumnOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the service to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8080,
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
    max_documents: Annotated[int, typer.Option(help="Most documents (or pairs) per request.")] = 1000,
    max_document_chars: Annotated[int, typer.Option(help="Most characters per document or query.")] = 100_000,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body, in bytes (else 413).")] = 16 * 1024 * 1024,
    queue_size: Annotated[int, typer.Option(help="Most requests waiting or running; beyond it, 429.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="Wait this long for more requests to merge.")] = 5.0,
    max_batch_pairs: Annotated[int, typer.Option(help="Most pairs merged into one model call.")] = 512,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests (off: one at a time).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds before a request gets 504.")] = 30.0,
    auto_truncate: Annotated[
        bool,
        typer.Option(
            "--auto-truncate/--no-auto-truncate", help="TEI requests without `truncate`: cut long texts, or 413."
        ),
    ] = True,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the API keys (comma-separated).")
    ] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="File with one API key per line.")] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow browser calls from this origin (repeatable); CORS is off without it."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Also answer requests whose Host header is this name (repeatable; '*.example.com' for "
            "subdomains, '*' for any). Default: loopback names and the bound address (a DNS-rebinding guard)."
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a connection has to send a request's headers (else it is closed).")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a request has to send its whole body after its headers (else 408).")
    ] = 30.0,
    docs: Annotated[
        bool, typer.Option("--docs/--no-docs", help="Serve the OpenAPI explorer at /docs (no CDN: assets served here).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only (no per-request lines).")] = False,
    engine: Annotated[
        str, typer.Option(help="'local' (uvicorn, this process) or 'ray' (Ray Serve replicas; crossrank[ray]).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--engine ray: a running cluster ('auto', 'HOST:6379'); default: start one here.")
    ] = None,
    replicas: Annotated[int, typer.Option(help="--engine ray: replicas (the initial count when autoscaling).")] = 1,
    min_replicas: Annotated[
        int | None, typer.Option(help="--engine ray: autoscale, never below this many replicas.")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="--engine ray: autoscale, never above this many replicas.")
    ] = None,
    target_ongoing_requests: Annotated[
        float, typer.Option(help="--engine ray: autoscaling target of requests in flight per replica.")
    ] = 2.0,
    max_ongoing_requests: Annotated[
        int, typer.Option(help="--engine ray: most requests one replica takes at once; the proxy queues the rest.")
    ] = 16,
    threads_per_replica: Annotated[int, typer.Option(help="--engine ray: CPUs (engine threads) per replica.")] = 1,
    family: FamilyOpt = None,
    template: TemplateOpt = None,
    instruction: InstructionOpt = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="A reference profile (`crossrank monitor profile`): /v1/monitor, a metric and a log line "
            "flag drift from it."
        ),
    ] = None,
    settings: SettingsOpt = None,
    judge: Annotated[
        Path | None,
        typer.Option(
            help="Judge at /judge: pool both stages' results blind and write the grades to this TREC qrels file "
            "(resumed when it exists; needs --index)."
        ),
    ] = None,
    judge_queries: Annotated[
        Path | None,
        typer.Option(help="--judge: the queries to judge (BEIR queries.jsonl or a request log); more can be typed."),
    ] = None,
    judge_depth: Annotated[int, typer.Option(help="--judge: results of each stage pooled per query.")] = 10,
    judge_name: Annotated[str, typer.Option(help="--judge: who judges (recorded beside the qrels).")] = "",
    request_log: Annotated[
        Path | None,
        typer.Option(
            help="Log a sample of requests (query, both orders, scores, timings, signals) as JSONL in this folder; "
            "off by default. Read it with `crossrank monitor report`."
        ),
    ] = None,
    log_sample: Annotated[float, typer.Option(help="--request-log: the share of requests logged, in (0, 1].")] = 0.1,
    log_texts: Annotated[
        str, typer.Option(help="--request-log: keep the query and document texts in full, hash them, or drop them.")
    ] = "hash",
    log_max_mb: Annotated[int, typer.Option(help="--request-log: rotate the file past this many MB (5 kept).")] = 64,
) -> None:
    """Serve a cross-encoder over HTTP: /v1/rerank, /v2/rerank, /rerank, /v1/score, /v1/search, /metrics."""
    _model_options(family, template, instruction)
    tuned = load_settings(settings) if settings is not None else None  # a bad file fails before any load
    # first: without the serve extra this is a one-line error naming the pip command, not a traceback
    from crossrank.serve import ApiKeys, ServeConfig, create_app
    from crossrank.serve.config import bound_hosts, is_wildcard_bind
    from crossrank.serve.server import uvicorn_config

    uvicorn = require("uvicorn", feature="crossrank serve")
    if engine == "ray" and (family or template or instruction):
        raise InputError("--family, --template and --instruction work with --engine local for now; drop them")

    if api_key_env and api_key_file:
        raise InputError("give --api-key-env or --api-key-file, not both")
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be within [0, 65535] (got {port})")
    keys = None
    if api_key_env:
        keys = ApiKeys.from_env(api_key_env)
    elif api_key_file:
        keys = ApiKeys.from_file(api_key_file)
    config = ServeConfig(
        max_documents=max_documents,
        max_document_chars=max_document_chars,
        max_body_bytes=max_body_bytes,
        queue_size=queue_size,
        max_wait_ms=max_wait_ms,
        max_batch_pairs=max_batch_pairs,
        batching=batching,
        timeout_s=timeout,
        auto_truncate=auto_truncate,
        cors_origins=tuple(cors_origin or ()),
        allowed_hosts=(*(allowed_host or ()), *bound_hosts(host)),
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        docs=docs,
    )
    logging.getLogger("crossrank.serve").setLevel(logging.WARNING if quiet else logging.INFO)
    if is_wildcard_bind(host) and not allowed_host:
        log.warning(
            "bound to %s: answering only Host names %s and this machine's addresses (a guard against "
            "DNS rebinding); name the others clients use with --allowed-host",
            host or "every address",
            ", ".join(("localhost", "127.0.0.1", "[::1]", *config.allowed_hosts)),
        )
    if engine not in ("local", "ray"):
        raise InputError(f"--engine must be local or ray (got {engine!r})")
    requests_out = None
    if request_log is not None:
        if engine != "local":
            raise InputError("--request-log works with --engine local (one process writes the log); drop it")
        from crossrank.serve.requestlog import TEXT_POLICIES, RequestLog

        if log_texts not in TEXT_POLICIES:
            raise InputError(f"--log-texts must be one of {', '.join(TEXT_POLICIES)} (got {log_texts!r})")
        requests_out = RequestLog(
            request_log,
            sample=log_sample,
            texts=log_texts,  # type: ignore[arg-type]
            max_bytes=log_max_mb * 1024 * 1024,
        )
    if judge_queries is not None and judge is None:
        raise InputError("--judge-queries needs --judge QRELS_FILE: where the grades go")
    session = None
    if judge is not None:
        if engine != "local" or (index is None and first_stage is None and retriever is None):
            raise InputError("--judge pools a search's results: serve an --index with --engine local")
        from crossrank.serve.judge import JudgeSession, read_judge_queries

        asked = read_judge_queries(judge_queries) if judge_queries is not None else {}
        describe = {"model": model, "index": str(index) if index is not None else retriever or first_stage}
        session = JudgeSession(judge, asked, depth=judge_depth, judge=judge_name, describe=describe)
    if first_stage is not None and (index is not None or engine != "local"):
        raise InputError("--first-stage is served alone (not with --index), with --engine local")
    pg_stage = None
    if retriever is not None:
        if not is_postgres(retriever):
            raise InputError(
                f"serve's --retriever names a Postgres first stage: postgres, postgres-vector or postgres-hybrid "
                f"(got {retriever!r}); an index's first stage is picked per request"
            )
        if index is not None or first_stage is not None or engine != "local":
            raise InputError(
                f"--retriever {retriever} is served alone (not with --index or --first-stage), with --engine local"
            )
        pg_stage = postgres_stage(retriever, dsn, table, id_column, text_columns, vector_column, tsvector_column)
    if engine == "ray":
        from crossrank.scale.serving import deployment_options, serve_on_ray

        options = deployment_options(
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
            max_ongoing_requests=max_ongoing_requests,
            threads_per_replica=threads_per_replica,
            graceful_shutdown_timeout_s=timeout + 5,
        )
        serve_on_ray(
            model,
            index=index,
            config=config,
            api_keys=keys,
            backend=backend,
            max_length=max_length,
            options=options,
            host=host,
            port=port,
            address=address,
            profile=profile,
            settings=tuned,
        )
        return
    from crossrank.retrieve.plugins import load_first_stage

    stage = load_first_stage(first_stage) if first_stage is not None else pg_stage
    reranker = _load(model, backend, max_length, progress=False)
    web_app = create_app(
        reranker,
        index=index,
        first_stage=stage,
        config=config,
        api_keys=keys,
        profile=profile,
        settings=tuned,
        judge=session,
        request_log=requests_out,
    )
    if requests_out is not None:
        log.info("logging %g of requests to %s (texts: %s)", log_sample, requests_out.path, log_texts)
    if session is not None:
        log.info("judging at http://%s:%d/judge: grades go to %s", host, port, session.path)
    if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s with no API keys: anyone who can reach it can use it", host)
    log.info("crossrank serving %s on http://%s:%d%s", reranker.name, host, port, " (API keys on)" if keys else "")
    uvicorn.Server(uvicorn_config(web_app, host=host, port=port)).run()
