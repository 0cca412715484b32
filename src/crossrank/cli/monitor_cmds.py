"""``crossrank monitor``: reference profiles of the label-free signals, and the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossrank.cli.app import BackendOpt, MaxLenOpt, ModelOpt, _cli_errors, _load, app
from crossrank.errors import InputError

monitor_app = typer.Typer(
    help="Watch a reranker without labels: reference profiles of its signals, and a verdict.", no_args_is_help=True
)
app.add_typer(monitor_app, name="monitor")

QueriesOpt = Annotated[Path | None, typer.Option(help="BEIR queries (JSONL) to rerank.")]
IndexOpt = Annotated[Path | None, typer.Option("--index", "-i", help="An index: its first stage finds candidates.")]
RunOpt = Annotated[Path | None, typer.Option(help="Instead of --index: a TREC run of the first stage's candidates.")]
CorpusOpt = Annotated[Path | None, typer.Option(help="With --run: the BEIR corpus (JSONL) the run's ids come from.")]
DepthOpt = Annotated[int, typer.Option(help="Candidates reranked per query.")]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N queries (of the run, or of the file).")]


@monitor_app.command("profile")
@_cli_errors
def monitor_profile(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the profile (JSON).")],
    queries: QueriesOpt = None,
    index: IndexOpt = None,
    run: RunOpt = None,
    corpus: CorpusOpt = None,
    depth: DepthOpt = 100,
    limit: LimitOpt = None,
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
) -> None:
    """Rerank trusted queries and save their signals' distributions as a reference profile."""
    from crossrank.evaluate.monitor import build_profile, collect_signals

    if queries is None:
        raise InputError("give the queries to profile with --queries QUERIES.jsonl")
    reranker = _load(model, backend, max_length)
    found, source = collect_signals(
        reranker, queries=queries, index=index, run=run, corpus=corpus, depth=depth, limit=limit, progress=True
    )
    profile = build_profile(reranker, found, source=source, depth=depth)
    profile.save(output)
    typer.echo(json.dumps({"profile": str(output), "num_queries": profile.num_queries, "model": profile.model}))


@monitor_app.command("verdict")
@_cli_errors
def monitor_verdict(
    profile: Annotated[
        Path | None, typer.Option(help="A profile (`crossrank monitor profile`) to judge, instead of reranking.")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="A trusted profile: queries where reranking was shown, with labels, to help. Without one, "
            "the profile shipped for the default model; other models can then say 'unclear' at best."
        ),
    ] = None,
    queries: QueriesOpt = None,
    index: IndexOpt = None,
    run: RunOpt = None,
    corpus: CorpusOpt = None,
    depth: DepthOpt = 100,
    limit: LimitOpt = None,
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
) -> None:
    """Say whether reranking looks like it helps (helping, unclear, likely hurting), without labels."""
    from crossrank.drift import Profile
    from crossrank.evaluate.monitor import builtin_reference, collect_signals, verdict

    trusted = Profile.load(reference) if reference is not None else None
    if profile is not None:
        if queries is not None or index is not None or run is not None:
            raise InputError("give --profile, or --queries with --index or --run, not both")
        judged = Profile.load(profile)
        result = verdict(judged, reference=trusted or builtin_reference(judged.model))
    else:
        if queries is None:
            raise InputError("give --profile PROFILE.json, or --queries with --index DIR or --run RUN --corpus CORPUS")
        reranker = _load(model, backend, max_length)
        found, _ = collect_signals(
            reranker, queries=queries, index=index, run=run, corpus=corpus, depth=depth, limit=limit, progress=True
        )
        trusted = trusted or builtin_reference(model)
        result = verdict(list(found.values()), activation=reranker.activation, reference=trusted)
    typer.echo(json.dumps(result.to_dict()))


@monitor_app.command("report")
@_cli_errors
def monitor_report(
    log: Annotated[Path, typer.Argument(help="The --request-log folder of `crossrank serve` (or one of its files).")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the report (one self-contained HTML file).")],
    profile: Annotated[
        Path | None, typer.Option(help="A reference profile: report the last --window requests' drift from it.")
    ] = None,
    window: Annotated[int, typer.Option(help="Requests compared with the profile (the most recent).")] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
) -> None:
    """Write a label-free report from a request log: signals over time, verdict, most reordered queries, drift."""
    from crossrank.drift import Profile
    from crossrank.evaluate.log_report import write_log_report

    reference = Profile.load(profile) if profile is not None else None
    summary = write_log_report(log, html, profile=reference, window=window, json_path=json_out)
    drifted = "" if summary.drift is None else f"; drift: {'yes' if summary.drift.drifted else 'no'}"
    typer.echo(f"{summary.records} requests, verdict: {summary.verdict.label}{drifted}; wrote {html}", err=True)
