"""``crossrank eval``: measures of one or more runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crossrank._text import plural
from crossrank.cli.app import _MODEL_OPTIONS, FamilyOpt, InstructionOpt, TemplateOpt, _cli_errors, _model_options, app
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
from crossrank.evaluate.metrics import DEFAULT_MEASURES

QrelsOpt = Annotated[Path, typer.Option(help="Judgments: BEIR tsv (with header) or TREC qrels.")]
RelOpt = Annotated[
    int | None, typer.Option(help="Grade from which binary measures count a document relevant (TREC DL: 2).")
]
SkipBadOpt = Annotated[bool, typer.Option(help="Skip (and count) duplicate run entries instead of failing.")]


def _evaluate_files(qrels: Path, run: list[Path], measures: str, rel: int | None, missing: str, skip_bad: bool) -> Any:
    """Read the judgments and runs, evaluate them, and print on stderr what was skipped or filled in."""
    from rich.console import Console

    from crossrank.errors import InputError
    from crossrank.evaluate.metrics import evaluate, read_run_checked
    from crossrank.io import read_qrels

    if missing not in ("skip", "zero"):
        raise InputError(f"--missing must be skip or zero (got {missing!r})")
    judgments = read_qrels(qrels)
    if not judgments:
        raise InputError(f"{qrels} holds no judgments")
    runs, checks = {}, {}
    for path in run:
        name = path.name if path.name not in runs else str(path)
        runs[name], checks[name] = read_run_checked(path, duplicates="skip" if skip_bad else "error")
    result = evaluate(judgments, runs, measures, rel=rel, missing=missing, checks=checks)  # type: ignore[arg-type]
    err = Console(stderr=True)
    for check in result.checks.values():
        for note in check.notes():
            err.print(f"note: {note}", highlight=False)
    return result


@app.command("eval")
@_cli_errors
def eval_runs(
    run: Annotated[list[Path] | None, typer.Option(help="A TREC run; repeat for several runs side by side.")] = None,
    qrels: Annotated[
        Path | None, typer.Option(help="Judgments: BEIR tsv (with header) or TREC qrels (default: --data's).")
    ] = None,
    measures: Annotated[str, typer.Option(help="ir-measures names; the first drives the report.")] = DEFAULT_MEASURES,
    rel: RelOpt = None,
    missing: Annotated[str, typer.Option(help="Judged queries a run lacks: skip (trec_eval) or zero (-c).")] = "skip",
    skip_bad: SkipBadOpt = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write measures (or the report) as JSON here.")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the report as one self-contained HTML file.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the report as Markdown (plots beside it).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="BEIR folder (corpus, queries, qrels): with --rerank, diagnose reranking.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split of --data.")] = "test",
    rerank: Annotated[
        str | None, typer.Option(help="Rerank the first --run with this cross-encoder and report diagnostics.")
    ] = None,
    depth: Annotated[int, typer.Option(help="Candidates reranked (with --rerank).")] = 100,
    depths: Annotated[str, typer.Option(help="Depth sweep (with --rerank); stops where candidates end.")] = (
        "10 20 50 100 200 500 1000"
    ),
    tolerance: Annotated[float, typer.Option(help="Knee: smallest depth within this of the best quality.")] = 0.005,
    pipeline: Annotated[
        Path | None,
        typer.Option(help="TOML with any of: run, index, first_stage, retriever, model, depth, rel, measures."),
    ] = None,
    first_stage: Annotated[
        str | None,
        typer.Option(
            help="With --data: search its queries with this first stage (module:attr or file.py:attr, "
            "also a document store) for the first --run."
        ),
    ] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "",
    retriever: Annotated[
        str | None,
        typer.Option(
            help="With --data: search its queries with a Postgres table for the first --run: postgres, "
            "postgres-vector or postgres-hybrid (--dsn, --table, ...)."
        ),
    ] = None,
    dsn: DsnOpt = None,
    pg_table: TableOpt = None,
    id_column: IdColumnOpt = "id",
    text_columns: TextColumnsOpt = "text",
    vector_column: VectorColumnOpt = None,
    tsvector_column: TsvectorColumnOpt = None,
    family: FamilyOpt = None,
    template: TemplateOpt = None,
    instruction: InstructionOpt = None,
) -> None:
    """Evaluate runs with ir-measures (the numbers trec_eval gives) and print them side by side.

    With --data and --rerank (or a --pipeline file), the first run is reranked by the model, and
    the diagnostics report (per-query changes, recall ceiling, depth sweep with latency, failure
    cases, truncation, score distributions, calibration) is written with --json, --markdown, --html.
    """
    from rich.console import Console
    from rich.table import Table

    _model_options(family, template, instruction)
    run = list(run or [])
    if pipeline is not None:
        cfg = _read_pipeline(pipeline)
        rerank = rerank or cfg.get("model", "default")
        depth = int(cfg.get("depth", depth))
        rel = rel if rel is not None else cfg.get("rel")
        measures = str(cfg.get("measures", measures))
        if not run and "run" in cfg:
            run = [Path(cfg["run"])]
        first_stage = first_stage or cfg.get("first_stage")
        if not run and "index" in cfg:
            if data is None:
                raise InputError("a pipeline with an index needs --data (the queries to search)")
            run = [_first_stage_from_index(cfg, data, depth)]
    if retriever is not None and not run:
        if not is_postgres(retriever):
            raise InputError(
                f"eval's --retriever names a Postgres first stage: postgres, postgres-vector or postgres-hybrid "
                f"(got {retriever!r}); for an index, use a --pipeline file"
            )
        if data is None:
            raise InputError(f"--retriever {retriever} needs --data (the queries to search)")
        stage = postgres_stage(retriever, dsn, pg_table, id_column, text_columns, vector_column, tsvector_column)
        try:
            run = [_first_stage_from_index({"stage": stage, "retriever": retriever}, data, depth)]
        finally:
            stage.close()
    if first_stage is not None and not run:
        if data is None:
            raise InputError("--first-stage needs --data (the queries to search)")
        base = pipeline.parent if pipeline is not None else None
        run = [_first_stage_from_index({"first_stage": first_stage, "base": base}, data, depth)]
    if data is not None and qrels is None:
        from crossrank.io import beir_qrels_path

        qrels = beir_qrels_path(data, split)
    if qrels is None:
        raise InputError("give --qrels, or --data with a BEIR folder that has qrels/<split>.tsv")
    if rerank is not None:
        if data is None:
            raise InputError("--rerank needs --data: the BEIR folder holding the texts of queries and documents")
        if not run:
            raise InputError("--rerank needs a first-stage --run (or a --pipeline with run or index)")
        _diagnose(
            data,
            qrels,
            run[0],
            rerank,
            measures,
            rel,
            depth,
            depths,
            tolerance,
            title,
            skip_bad,
            json_out,
            markdown,
            html,
        )
        return
    if not run:
        raise InputError("give at least one --run")
    result = _evaluate_files(qrels, run, measures, rel, missing, skip_bad)
    table = Table(title=plural(len(result.queries), "judged query") + (f", relevant = grade >= {rel}" if rel else ""))
    # run names fold rather than lose their ends; numbers are never split
    table.add_column("run", overflow="fold", min_width=10)
    for m in result.measures:
        table.add_column(m, justify="right", no_wrap=True)
    for name, values in result.aggregate.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in result.measures))
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    if html is not None or markdown is not None:
        raise InputError(
            "--html and --markdown write the diagnostics report, which reranks a first stage: add --data DIR "
            "--rerank MODEL (or use `crossrank compare` to compare finished runs)"
        )


def _read_pipeline(path: Path) -> dict[str, Any]:
    from crossrank.io import read_toml

    cfg = read_toml(
        path,
        what="pipeline file",
        allowed=("run", "index", "first_stage", "retriever", "model", "depth", "rel", "measures"),
    )
    base = path.parent
    for key in ("run", "index"):
        if key in cfg:
            cfg[key] = str((base / cfg[key]) if not Path(cfg[key]).is_absolute() else Path(cfg[key]))
    return cfg


def _first_stage_from_index(cfg: dict[str, Any], data: Path, depth: int) -> Path:
    """Run the pipeline's first stage (an index, or ``first_stage``) over --data's queries; return the run written."""
    import tempfile

    from crossrank.io import read_beir_queries, write_trec_run
    from crossrank.pipeline import Pipeline
    from crossrank.retrieve.plugins import load_first_stage

    if "index" in cfg:
        pipe = Pipeline(cfg["index"], reranker=None)
    elif "stage" in cfg:
        pipe = Pipeline(cfg["stage"], reranker=None)
    else:
        pipe = Pipeline(load_first_stage(cfg["first_stage"], base=cfg.get("base")), reranker=None)
    queries = read_beir_queries(data / "queries.jsonl")
    results = pipe.search_many(queries, k=depth, depth=depth, retriever=cfg.get("retriever"), rerank=False)
    out = Path(tempfile.mkdtemp(prefix="crossrank-eval-")) / f"{cfg.get('retriever') or 'first-stage'}.trec"
    with out.open("w", encoding="utf-8") as fh:
        write_trec_run(results, fh, tag="first-stage")  # not reranked: a hit's score is its first-stage score
    return out


def _diagnose(
    data: Path,
    qrels: Path,
    run: Path,
    model: str,
    measures: str,
    rel: int | None,
    depth: int,
    depths: str,
    tolerance: float,
    title: str,
    skip_bad: bool,
    json_out: Path | None,
    markdown: Path | None,
    html: Path | None,
) -> None:
    import shlex
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crossrank.evaluate.diagnostics import DiagnosticsConfig, diagnose
    from crossrank.evaluate.metrics import read_run_checked
    from crossrank.evaluate.report import write_report
    from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels
    from crossrank.rerank.cross_encoder import CrossEncoder

    try:
        sweep = tuple(int(x) for x in depths.replace(",", " ").split())
    except ValueError as err:
        raise InputError(f"--depths must be integers such as '10 20 50 100' (got {depths!r})") from err
    cfg = DiagnosticsConfig(depth=depth, depths=sweep, measures=measures, rel=rel or 1, tolerance=tolerance)
    judgments = read_qrels(qrels)
    queries = read_beir_queries(data / "queries.jsonl")
    corpus = read_beir_corpus(data / "corpus.jsonl")
    candidates, check = read_run_checked(run, duplicates="skip" if skip_bad else "error")
    ordered = {q: sorted(d.items(), key=lambda t: -t[1]) for q, d in candidates.items()}
    reranker = CrossEncoder(model, **_MODEL_OPTIONS)  # type: ignore[arg-type]
    total = sum(min(len(v), d) for v in ordered.values() if v for d in sorted({*sweep, depth}))
    console = Console(stderr=True)
    with Progress(
        TextColumn("diagnosing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pairs"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("pairs", total=total)
        diag = diagnose(
            reranker,
            judgments,
            queries,
            corpus,
            ordered,
            config=cfg,
            title=title,
            first_stage=run.stem,
            run_check=check,
            progress=lambda n: bar.advance(task, n),
        )
    diag.command = "crossrank " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_report(diag, json_path=json_out, markdown_path=markdown, html_path=html)
    console.print(_headline_text(diag), highlight=False)
    for note in diag.notes:
        console.print(f"note: {note}", highlight=False)


def _headline_text(diag: Any) -> str:
    from crossrank.evaluate.report import headline

    return str(headline(diag))


@app.command("compare")
@_cli_errors
def compare_runs(
    qrels: QrelsOpt,
    run: Annotated[list[Path], typer.Option(help="Runs to compare; the first is the baseline.")],
    measures: Annotated[str, typer.Option(help="ir-measures names.")] = "nDCG@10 RR@10 R@100",
    rel: RelOpt = None,
    alpha: Annotated[float, typer.Option(help="Significance level for the marks.")] = 0.05,
    skip_bad: SkipBadOpt = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the comparison here.")] = None,
) -> None:
    """Compare runs with the first one: mean differences, 95% CIs, paired t and randomization tests.

    A value is marked * when both tests find it differs from the baseline at --alpha, with its sign.
    """
    from rich.console import Console
    from rich.table import Table

    from crossrank.errors import InputError
    from crossrank.evaluate.significance import paired_comparison

    if len(run) < 2:
        raise InputError("compare needs at least two --run files (the first is the baseline)")
    result = _evaluate_files(qrels, run, measures, rel, "skip", skip_bad)
    names = list(result.aggregate)
    base = names[0]
    rows: dict[str, dict[str, Any]] = {}
    console = Console()
    # a table per run and a row per measure: the columns stay few and narrow, so an
    # 80-column terminal shows every number whole however many measures are asked for
    for i, name in enumerate(names[1:], start=1):
        rows[name] = {}
        table = Table(
            title=f"{name} vs {base} (baseline)",
            caption=(
                f"means over the queries both runs answer; * both tests p < {alpha}; w/t/l: queries better/tied/worse"
                if i == len(names) - 1
                else None
            ),
        )
        table.add_column("measure", overflow="fold")
        for col in ("baseline", "run", "diff", "95% CI of diff", "w/t/l"):
            table.add_column(col, justify="right", no_wrap=True)
        for m in result.measures:
            qs = sorted(set(result.per_query[base][m]) & set(result.per_query[name][m]))
            cmp = paired_comparison(
                [result.per_query[base][m][q] for q in qs], [result.per_query[name][m][q] for q in qs]
            )
            rows[name][m] = cmp.to_dict()
            mark = "*" if cmp.significant(alpha) else ""
            table.add_row(
                m,
                f"{cmp.baseline:.4f}",
                f"{cmp.system:.4f}{mark}",
                f"{cmp.mean_diff:+.4f}",
                f"[{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}]",
                f"{cmp.wins}/{cmp.ties}/{cmp.losses}",
            )
        console.print(table)
    if json_out is not None:
        out = {"baseline": base, "alpha": alpha, "aggregate": result.aggregate, "comparisons": rows}
        json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
