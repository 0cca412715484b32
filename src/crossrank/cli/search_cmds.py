"""``crossrank index build|add|delete|compact|info|verify`` and ``crossrank search``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from crossrank._text import plural
from crossrank.cli.app import SettingsOpt, _cli_errors, _print_jsonl, app
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
from crossrank.documents import record_text
from crossrank.errors import InputError

index_app = typer.Typer(help="Build and update a retrieval index (BM25, dense, hybrid).", no_args_is_help=True)
app.add_typer(index_app, name="index")

IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="The index folder.")]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad", help="Skip (and count) bad records: duplicate ids, empty documents, missing fields."),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
_RETRIEVERS = ("bm25", "dense", "hybrid")


def _retriever(value: str | None) -> Any:
    if value is not None and value not in _RETRIEVERS:
        raise InputError(f"--retriever must be bm25, dense or hybrid (got {value!r})")
    return value


@index_app.command("build")
@_cli_errors
def index_build(
    corpus: Annotated[Path, typer.Option(help="BEIR folder or JSONL: {'_id'|'id', 'text', 'title'?, ...}.")],
    index: Annotated[Path | None, typer.Option("--index", "-i", help="The index folder (--target index).")] = None,
    retriever: Annotated[
        str, typer.Option(help="bm25, dense or hybrid (both); with --target postgres: dense or hybrid add vectors.")
    ] = "bm25",
    dense_model: Annotated[str, typer.Option(help="Bi-encoder: built-in name, folder or hub id.")] = "bge-small-en",
    dtype: Annotated[str, typer.Option(help="Vector storage: float32 or int8.")] = "float32",
    ann: Annotated[str, typer.Option(help="exact, hnsw, or auto (HNSW from 50k vectors).")] = "auto",
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = 0.9,
    b: Annotated[float, typer.Option(help="BM25 b.")] = 0.4,
    stemmer: Annotated[str, typer.Option(help="Snowball stemmer (porter, english, german, ...) or none.")] = "porter",
    stopwords: Annotated[str, typer.Option(help="Stopword list (en, en_plus, de, ...) or none.")] = "en",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf or interpolate.")] = "rrf",
    dense_weight: Annotated[float, typer.Option(help="Hybrid interpolation: the dense share.")] = 0.5,
    skip_bad: SkipBadOpt = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index (atomically).")] = False,
    progress: ProgressOpt = True,
    target: Annotated[
        str, typer.Option(help="index (a folder, --index) or postgres (a new table: --dsn, --table).")
    ] = "index",
    dsn: DsnOpt = None,
    table: TableOpt = None,
) -> None:
    """Build an index from a corpus (or, with --target postgres, a Postgres table). Prints what was built."""
    from crossrank.retrieve.bm25 import BM25Settings
    from crossrank.retrieve.index import Index, WriteReport

    if target == "postgres":
        _build_postgres(corpus, dsn, table, _retriever(retriever), dense_model, overwrite)
        return
    if target != "index":
        raise InputError(f"--target must be index or postgres (got {target!r})")
    if index is None:
        raise InputError("--target index needs --index DIR (the folder to build the index in)")

    report = WriteReport()
    settings = BM25Settings(
        k1=k1,
        b=b,
        stemmer=None if stemmer.lower() == "none" else stemmer,
        stopwords=None if stopwords.lower() == "none" else stopwords,
    )
    idx = Index.build(
        index,
        corpus,
        retriever=_retriever(retriever),
        bm25=settings,
        dense_model=dense_model,
        dtype=dtype,
        ann=ann,
        fusion=fusion,
        dense_weight=dense_weight,
        on_error="skip" if skip_bad else "raise",
        overwrite=overwrite,
        progress=progress,
        report=report,
    )
    _print_jsonl([{"index": str(index), "documents": len(idx), "report": report.to_dict()}])


def _build_postgres(
    corpus: Path, dsn: str | None, table: str | None, retriever: str, dense_model: str, overwrite: bool
) -> None:
    import shlex

    from crossrank.retrieve.postgres import build_postgres_table

    if not dsn or not table:
        raise InputError("--target postgres needs --dsn (the server) and --table (the table to create)")
    vectors = retriever in ("dense", "hybrid")
    mapping = build_postgres_table(dsn, corpus, table, vectors=vectors, encoder=dense_model, overwrite=overwrite)
    search = (
        f"crossrank search --retriever {'postgres-hybrid' if vectors else 'postgres'} --dsn {shlex.quote(dsn)} "
        f"--table {shlex.quote(table)} --text-columns title,text --tsvector-column tsv"
        + (" --vector-column embedding" if vectors else "")
        + ' "your query"'
    )
    _print_jsonl([{"table": table, "columns": list(mapping.columns()), "search": search}])


@index_app.command("add")
@_cli_errors
def index_add(
    corpus: Annotated[Path, typer.Option(help="BEIR folder or JSONL of documents to add.")],
    index: IndexOpt,
    upsert: Annotated[bool, typer.Option(help="Replace documents whose id is already in the index.")] = False,
    skip_bad: SkipBadOpt = False,
    max_segments: Annotated[
        int, typer.Option(help="Merge all segments in this write when there would be more than this (0: never).")
    ] = 32,
    progress: ProgressOpt = True,
) -> None:
    """Add documents (or update them, with --upsert)."""
    from crossrank.retrieve.index import Index

    if max_segments < 0:
        raise InputError(f"--max-segments must be >= 0 (0 never merges; got {max_segments})")
    idx = Index.open(index)
    report = idx.add(
        corpus,
        on_conflict="replace" if upsert else "error",
        on_error="skip" if skip_bad else "raise",
        progress=progress,
        max_segments=max_segments or None,
    )
    _print_jsonl([{"index": str(index), "documents": len(idx), "report": report.to_dict()}])


@index_app.command("delete")
@_cli_errors
def index_delete(
    index: IndexOpt,
    ids: Annotated[list[str] | None, typer.Argument(help="Document ids to delete.")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids", help="File with one id per line.")] = None,
    ignore_missing: Annotated[bool, typer.Option(help="Delete the ids that exist; ignore the others.")] = False,
) -> None:
    """Delete documents by id."""
    from crossrank.retrieve.index import Index

    wanted = list(ids or [])
    if ids_file is not None:
        try:
            wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read ids from {ids_file} ({err})") from err
    if not wanted:
        raise InputError("name the ids to delete, as arguments or with --ids FILE")
    idx = Index.open(index)
    report = idx.delete(wanted, missing="ignore" if ignore_missing else "error")
    _print_jsonl([{"index": str(index), "documents": len(idx), "report": report.to_dict()}])


@index_app.command("compact")
@_cli_errors
def index_compact(index: IndexOpt, progress: ProgressOpt = True) -> None:
    """Merge the segments into one and drop deleted and replaced rows (same results, less to search)."""
    from crossrank.retrieve.index import Index

    idx = Index.open(index)
    before = idx.info()["bytes_on_disk"], len(idx.segments)
    report = idx.compact(progress=progress)
    after = idx.info()["bytes_on_disk"], len(idx.segments)
    _print_jsonl(
        [
            {
                "index": str(index),
                "documents": len(idx),
                "segments": {"before": before[1], "after": after[1]},
                "bytes_on_disk": {"before": before[0], "after": after[0]},
                "report": report.to_dict(),
            }
        ]
    )


@index_app.command("info")
@_cli_errors
def index_info(index: IndexOpt) -> None:
    """Print what the index holds: models, parameters, versions, counts, size on disk."""
    from crossrank.retrieve.durable import disk_usage
    from crossrank.retrieve.index_files import open_current, read_manifest

    manifest = open_current(index, lambda gen: read_manifest(index, gen))  # no model loading: info is instant
    manifest["folder"] = str(index)
    manifest["bytes_on_disk"] = disk_usage(index)
    sys.stdout.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


@index_app.command("verify")
@_cli_errors
def index_verify(
    folder: Annotated[Path | None, typer.Argument(help="The index folder (or --index).", show_default=False)] = None,
    index: Annotated[Path | None, typer.Option("--index", "-i", help="The index folder.")] = None,
) -> None:
    """Read every file of the index and check it; exit 1 when something is damaged."""
    from crossrank.retrieve.index import Index

    if (folder is None) == (index is None):
        raise InputError("name the index folder once: crossrank index verify DIR (or --index DIR)")
    target = folder or index
    assert target is not None
    report = Index.verify(target)
    if report.ok:
        typer.echo(
            f"index {target} is sound: generation {report.generation}, {plural(report.documents, 'document')} "
            f"in {plural(report.segments, 'segment')}, {plural(report.files, 'file')} checked"
        )
    else:
        typer.echo(f"index {target} is damaged: {plural(len(report.problems), 'problem')}")
        for problem in report.problems:
            typer.echo(f"  {problem}")
        typer.echo("rebuild it (crossrank index build --overwrite) or restore it from a backup")
    if report.leftovers:
        typer.echo(
            f"{plural(len(report.leftovers), 'leftover')} of earlier writes (not damage; the next write removes them): "
            + ", ".join(report.leftovers[:5])
            + (", ..." if len(report.leftovers) > 5 else "")
        )
    if not report.ok:
        raise typer.Exit(1)


def _with_settings(
    ctx: typer.Context, path: Path, rerank: bool, depth: int, rerank_weight: float, blend: str
) -> tuple[bool, int, float, str]:
    """Return rerank, depth, weight and blend from a `crossrank tune` file; a flag on the command line wins."""
    from crossrank.settings import load_settings

    tuned = load_settings(path)

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    return (
        rerank if given("rerank") else tuned.rerank,
        depth if given("depth") else tuned.depth,
        rerank_weight if given("rerank_weight") else tuned.rerank_weight,
        blend if given("blend") else tuned.blend,
    )


@app.command()
@_cli_errors
def search(
    ctx: typer.Context,
    index: Annotated[Path | None, typer.Option("--index", "-i", help="The index folder.")] = None,
    first_stage: Annotated[
        str | None,
        typer.Option(
            help="Instead of --index: a first stage and document store, as module:attr or file.py:attr "
            "(an object with retrieve(queries, k) and get(ids), or a class making one)."
        ),
    ] = None,
    query: Annotated[str | None, typer.Argument(help="A free-text query: prints a table.")] = None,
    queries: Annotated[Path | None, typer.Option(help="Queries (BEIR queries.jsonl): writes a TREC run.")] = None,
    k: Annotated[int, typer.Option(help="Results per query.")] = 10,
    depth: Annotated[int, typer.Option(help="First-stage candidates reranked per query; at least --k.")] = 100,
    retriever: Annotated[
        str | None,
        typer.Option(
            help="bm25, dense or hybrid (default: the index's); or postgres, postgres-vector, postgres-hybrid "
            "(a Postgres table: --dsn, --table, ...)."
        ),
    ] = None,
    dsn: DsnOpt = None,
    table: TableOpt = None,
    id_column: IdColumnOpt = "id",
    text_columns: TextColumnsOpt = "text",
    vector_column: VectorColumnOpt = None,
    tsvector_column: TsvectorColumnOpt = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Rerank with the cross-encoder.")] = True,
    rerank_weight: Annotated[
        float,
        typer.Option(help="Cross-encoder share of the final score (1: its order alone; <1 blends in the first stage)."),
    ] = 1.0,
    blend: Annotated[
        str,
        typer.Option(help="With --rerank-weight < 1: probability (as is) or minmax (stretched per query)."),
    ] = "probability",
    model: Annotated[str, typer.Option("--model", "-m", help="Cross-encoder for reranking.")] = "default",
    output: Annotated[Path | None, typer.Option(help="TREC run to write ('-' for stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or jsonl (one query).")] = "table",
    batch_size: Annotated[int, typer.Option(help="Queries searched together.")] = 32,
    progress: ProgressOpt = True,
    settings: SettingsOpt = None,
) -> None:
    """Search an index (or another first stage): first stage, then the cross-encoder on the top --depth."""
    from crossrank.pipeline import Pipeline, check_depth
    from crossrank.retrieve.plugins import load_first_stage

    if settings is not None:
        rerank, depth, rerank_weight, blend = _with_settings(ctx, settings, rerank, depth, rerank_weight, blend)

    if is_postgres(retriever):
        if index is not None or first_stage is not None:
            raise InputError(f"--retriever {retriever} searches a Postgres table: drop --index and --first-stage")
    elif (index is None) == (first_stage is None):
        raise InputError("give either --index DIR or --first-stage module:attr (or --retriever postgres --dsn --table)")
    if (query is None) == (queries is None):
        raise InputError('give either a query ("free text") or --queries FILE')
    if queries is not None and output is None:
        raise InputError("--queries needs --output run.trec ('-' for stdout)")
    if fmt not in ("table", "jsonl"):
        raise InputError(f"--format must be table or jsonl (got {fmt!r})")
    if rerank:
        check_depth(k, depth)  # before loading anything; the pipeline checks it again
    if is_postgres(retriever):
        assert retriever is not None
        stage = postgres_stage(retriever, dsn, table, id_column, text_columns, vector_column, tsvector_column)
    else:
        stage = index if index is not None else load_first_stage(str(first_stage))
    pipe = Pipeline(stage, reranker=model if rerank else None, rerank_weight=rerank_weight, blend=blend)  # type: ignore[arg-type]
    ret = None if is_postgres(retriever) else _retriever(retriever)
    if query is not None:
        result = pipe.search(query, k=k, depth=depth, retriever=ret, rerank=rerank)
        if fmt == "jsonl":
            _print_jsonl([result.to_dict()])
        else:
            _search_table(result)
        return
    from crossrank.io import read_beir_queries, write_trec_run

    assert queries is not None and output is not None
    qs = read_beir_queries(queries)
    if not qs:
        raise InputError(f"{queries} holds no queries")
    tag = f"crossrank-{ret or pipe.default_retriever}" + ("-rerank" if rerank else "")
    out = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8")
    lines = 0
    try:
        ids = list(qs)
        bar = _bar(progress and str(output) != "-", len(ids))
        with bar as p:
            task = p.add_task("searching", total=len(ids)) if p is not None else None
            for start in range(0, len(ids), batch_size):
                chunk = {q: qs[q] for q in ids[start : start + batch_size]}
                lines += write_trec_run(
                    pipe.search_many(chunk, k=k, depth=depth, retriever=ret, rerank=rerank), out, tag=tag
                )
                if p is not None and task is not None:
                    p.update(task, advance=len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    typer.echo(f"wrote {plural(lines, 'line')} for {plural(len(qs), 'query')} to {output}", err=True)


def _bar(enabled: bool, total: int) -> Any:
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _search_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = result.timings_ms
    title = f"{result.query!r}: {result.retriever}" + (
        f" + rerank of top {result.depth}" if result.reranked else " (no rerank)"
    )
    caption = f"first stage {t['first_stage']:.0f} ms · rerank {t['rerank']:.0f} ms"
    table = Table(title=title, caption=caption)
    # numbers keep one line; ids fold instead of losing their ends; the text takes what is left
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("doc_id", overflow="fold", max_width=20)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("first stage", justify="right", overflow="fold", max_width=12)
    table.add_column("moved", justify="right", no_wrap=True)
    table.add_column("text", overflow="fold", ratio=1, min_width=20)
    for h in result.hits:
        moved = h.first_stage_rank - h.rank
        doc = h.document
        text = record_text(doc)
        table.add_row(
            str(h.rank),
            h.doc_id,
            f"{h.score:.4f}",
            f"#{h.first_stage_rank} ({h.first_stage_score:.3f})",
            f"+{moved}" if moved > 0 else str(moved) if moved < 0 else "=",
            text if len(text) <= 240 else text[:237] + "...",
        )
    Console().print(table)
