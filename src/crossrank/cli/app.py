"""``crossrank`` command line: thin commands that parse, make one library call, and format."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer

from crossrank._text import plural
from crossrank.errors import CrossrankError, InputError

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="crossrank",
    help="Retrieve-and-rerank search with cross-encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, convert and locate models.", invoke_without_command=True)
app.add_typer(models_app, name="models")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Built-in name, model folder, .onnx file or hub id.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        help="auto (the fastest engine for this CPU; `crossrank models` says which), onnx, openvino or torch."
    ),
]
ActivationOpt = Annotated[
    str | None,
    typer.Option(
        help="sigmoid, softmax, none (raw logits) or calibrated (default: calibrated if `crossrank calibrate` ran)."
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", help="jsonl (default) or table.")]
MaxLenOpt = Annotated[int | None, typer.Option(help="Most tokens per pair; the document is cut, the query kept.")]
SettingsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Settings from `crossrank tune`: rerank or not, depth and blend weight (flags given as well win)."
    ),
]
FamilyOpt = Annotated[
    str | None,
    typer.Option(
        help="The model's family, when its files do not say: sequence-classification, decoder-classification, "
        "causal-lm or t5 (a family that contradicts the config is refused)."
    ),
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        help="A decoder or T5 reranker's prompt template: qwen3-reranker, mxbai-rerank-v2, bge-reranker-gemma, monot5."
    ),
]
InstructionOpt = Annotated[
    str | None,
    typer.Option(
        help="The task instruction, for rerankers whose template takes one (Qwen3-Reranker, mxbai-rerank-v2)."
    ),
]

# --family/--template/--instruction of the running command, which every model load of it uses
_MODEL_OPTIONS: dict[str, str] = {}


def _model_options(family: str | None, template: str | None, instruction: str | None) -> None:
    """Keep the command's model options for :func:`_load` (one command runs per process)."""
    given = {"family": family, "template": template, "instruction": instruction}
    _MODEL_OPTIONS.clear()
    _MODEL_OPTIONS.update({k: v for k, v in given.items() if v is not None})


def _cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn crossrank and I/O errors into a one-line message and exit code 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (CrossrankError, OSError) as err:
            msg = str(err).replace("\n", " ")
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one-time builds of optimised graphs take a minute: say so on the command line
    logging.getLogger("crossrank.models").setLevel(logging.INFO)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"crossrank {version('crossrank')}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO to stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _setup_logging(verbose)


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "onnx", "openvino", "torch"):
        raise InputError(f"--backend must be auto, onnx, openvino or torch (got {backend!r})")


def _check_activation(activation: str | None) -> None:
    if activation not in (None, "sigmoid", "softmax", "none", "calibrated"):
        raise InputError(f"--activation must be sigmoid, softmax, none or calibrated (got {activation!r})")


def _load(
    model: str, backend: str, max_length: int | None, progress: bool = True, activation: str | None = None
) -> Any:
    from crossrank import CrossEncoder, ScoringConfig

    _check_backend(backend)
    _check_activation(activation)
    ce = CrossEncoder(
        model,
        backend=backend,
        config=ScoringConfig(max_length=max_length, activation=activation),  # type: ignore[arg-type]
        progress=progress,
        **_MODEL_OPTIONS,
    )
    if ce.calibration_source is not None and activation is None:
        typer.echo(
            f"note: scores are calibrated probabilities ({ce.calibration_source}, from `crossrank calibrate`); "
            "--activation sigmoid gives the model's own, `crossrank calibrate --remove` deletes the calibration",
            err=True,
        )
    return ce


def _check_format(fmt: str) -> Literal["jsonl", "table"]:
    if fmt not in ("jsonl", "table"):
        raise InputError(f"--format must be jsonl or table (got {fmt!r})")
    return fmt  # type: ignore[return-value]


def _note_truncation(n: int, total: int, max_length: int) -> None:
    if n:
        typer.echo(
            f"note: {n} of {total} pairs were truncated to max_length={max_length} tokens (query kept, document cut)",
            err=True,
        )


# ---------------------------------------------------------------------- rerank


@app.command()
@_cli_errors
def rerank(
    query: Annotated[str | None, typer.Argument(help="The query (single-query mode).")] = None,
    documents: Annotated[list[str] | None, typer.Argument(help="Documents to rerank.")] = None,
    documents_file: Annotated[
        Path | None,
        typer.Option(
            "--documents",
            "-d",
            help="JSONL of documents: {'id','text','title'?} objects or JSON strings, one per line.",
        ),
    ] = None,
    corpus: Annotated[Path | None, typer.Option(help="Batch mode: BEIR corpus.jsonl.")] = None,
    queries: Annotated[Path | None, typer.Option(help="Batch mode: BEIR queries.jsonl.")] = None,
    run: Annotated[Path | None, typer.Option(help="Batch mode: first-stage TREC run.")] = None,
    depth: Annotated[int, typer.Option(help="Batch mode: candidates reranked per query.")] = 100,
    output: Annotated[Path | None, typer.Option(help="Batch mode: TREC run to write ('-' for stdout).")] = None,
    k: Annotated[int | None, typer.Option(help="Results to keep per query (default: all).")] = None,
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
    activation: ActivationOpt = None,
    fmt: FormatOpt = "jsonl",
    text: Annotated[bool, typer.Option("--text/--no-text", help="Include document text in the output.")] = False,
    skip_missing: Annotated[
        bool,
        typer.Option(help="Batch mode: skip (and count) run entries missing from the corpus or queries."),
    ] = False,
    pairs: Annotated[
        Path | None,
        typer.Option(help="Batch mode: Parquet or JSONL rows of query_id, query, doc_id, text (instead of a run)."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="Batch mode: 'local' (this process) or 'ray' (a Ray cluster; crossrank[ray]).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: a running cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); default: local."),
    ] = None,
    workers: Annotated[int, typer.Option(help="--engine ray: scoring actors, each with the model loaded once.")] = 2,
    threads_per_worker: Annotated[int, typer.Option(help="--engine ray: CPUs (engine threads) per actor.")] = 1,
    block_pairs: Annotated[int, typer.Option(help="--engine ray: pairs per block, the unit of work and retry.")] = 1024,
    family: FamilyOpt = None,
    template: TemplateOpt = None,
    instruction: InstructionOpt = None,
) -> None:
    """Rerank documents for a query, or a whole first-stage run (batch mode), here or on a Ray cluster."""
    batch = any(x is not None for x in (corpus, queries, run, pairs))
    _model_options(family, template, instruction)
    # every option is checked before the model loads
    if k is not None and k < 1:
        raise InputError(f"--k must be >= 1 (got {k}); leave it out to keep every document")
    if batch and k is not None and k > depth:
        raise InputError(f"--depth must be >= --k (got depth={depth}, k={k}); raise --depth or lower --k")
    _check_backend(backend)
    _check_activation(activation)
    _check_format(fmt)
    if batch:
        if query is not None or documents or documents_file is not None:
            raise InputError("batch mode (--corpus/--queries/--run or --pairs) takes no query or documents arguments")
        if engine not in ("local", "ray"):
            raise InputError(f"--engine must be local or ray (got {engine!r})")
        if depth < 1:
            raise InputError(f"--depth must be >= 1 (got {depth})")
        if pairs is not None and any(x is not None for x in (corpus, queries, run)):
            raise InputError("give --pairs FILE or --corpus/--queries/--run, not both")
        if output is None or (pairs is None and (corpus is None or queries is None or run is None)):
            raise InputError("batch mode needs --output and either all of --corpus, --queries, --run, or --pairs")
        table_io = pairs is not None or output.suffix.lower() == ".parquet"
        if (engine == "ray" or table_io) and _MODEL_OPTIONS:
            raise InputError(
                "--family, --template and --instruction work with --engine local and a TREC --output for now; "
                "drop them, or write a TREC run"
            )
        if engine == "ray" or table_io:
            _rerank_table(
                (pairs, corpus, queries, run),
                depth,
                output,
                k,
                model,
                backend,
                max_length,
                skip_missing,
                engine,
                address,
                workers,
                threads_per_worker,
                block_pairs,
                activation,
            )
            return
        assert corpus is not None and queries is not None and run is not None
        _rerank_run(corpus, queries, run, depth, output, k, model, backend, max_length, skip_missing, activation)
        return
    if query is None:
        raise InputError(
            'give a query and documents: crossrank rerank "QUERY" "doc one" "doc two" (or --documents FILE)'
        )
    if not query.strip():
        raise InputError(f"query is empty (got {query!r}); pass the query text as the first argument")
    docs: list[Any] = list(documents or [])
    if documents_file is not None:
        from crossrank.io import read_documents_jsonl

        docs.extend(read_documents_jsonl(documents_file))
    if not docs:
        raise InputError("no documents to rerank; pass them as arguments or with --documents FILE")
    style = _check_format(fmt)
    ce = _load(model, backend, max_length, activation=activation)
    ranking = ce.rerank(query, docs, k=k, return_text=True)
    rows = [
        {
            "rank": r,
            "index": h.index,
            "id": h.doc_id,
            "score": round(h.score, 6),
            **({"text": h.text} if text else {}),
        }
        for r, h in enumerate(ranking.hits, start=1)
    ]
    if style == "table":
        _print_table(rows, title=f"{query}  ({ce.name})", text_rows=[h.text or "" for h in ranking.hits])
    else:
        _print_jsonl(rows)


def _rerank_run(
    corpus_path: Path,
    queries_path: Path,
    run_path: Path,
    depth: int,
    output: Path,
    k: int | None,
    model: str,
    backend: str,
    max_length: int | None,
    skip_missing: bool,
    activation: str | None = None,
) -> None:
    from crossrank.io import read_run_candidates, write_trec_run

    run = read_run_candidates(run_path, queries_path, corpus_path, depth=depth, skip_missing=skip_missing)
    missing_q, missing_d = run.missing_queries, run.missing_docs
    ce = _load(model, backend, max_length, activation=activation)
    rankings = ce.rerank_many(run.queries, run.documents, k=k, query_ids=run.query_ids)
    total = run.num_pairs
    if str(output) == "-":
        written = write_trec_run(rankings, sys.stdout)
    else:
        tmp = output.with_name(output.name + ".partial")
        with tmp.open("w", encoding="utf-8") as fh:
            written = write_trec_run(rankings, fh)
        tmp.replace(output)
    skipped = (
        f"; skipped {plural(len(missing_q), 'query')} and {plural(len(missing_d), 'doc')} missing from the inputs"
        if (missing_q or missing_d)
        else ""
    )
    typer.echo(
        f"reranked {total} pairs for {len(rankings)} queries; wrote {written} lines to {output}{skipped}",
        err=True,
    )


def _rerank_table(
    source: tuple[Path | None, Path | None, Path | None, Path | None],
    depth: int,
    output: Path,
    k: int | None,
    model: str,
    backend: str,
    max_length: int | None,
    skip_missing: bool,
    engine: str,
    address: str | None,
    workers: int,
    threads_per_worker: int,
    block_pairs: int,
    activation: str | None = None,
) -> None:
    """Batch mode over a pairs table: on Ray (``--engine ray``), or here for Parquet in or out."""
    import json

    from crossrank.scale.batch import read_pairs, rerank_here, rerank_on_ray, run_pairs, write_output

    pairs, corpus, queries, run = source
    skipped = {"skipped_queries": 0, "skipped_docs": 0}
    if pairs is not None:
        table = read_pairs(pairs)
    else:
        assert corpus is not None and queries is not None and run is not None
        table, skipped = run_pairs(run, corpus, queries, depth=depth, skip_missing=skip_missing)
    if str(output) == "-":
        raise InputError("--output - (stdout) is for the local engine with a run; give a file path")
    if engine == "ray":
        import logging

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # the command's own bar and summary say what ran
        result = rerank_on_ray(
            table,
            model=model,
            backend=backend,  # type: ignore[arg-type]
            max_length=max_length,
            workers=workers,
            threads_per_worker=threads_per_worker,
            address=address,
            block_pairs=block_pairs,
            k=k,
            progress=True,
        )
    else:
        ce = _load(model, backend, max_length, activation=activation)
        result = rerank_here(table, ce, k=k)
    written = write_output(result, output)
    s = result.summary
    if engine == "ray":  # the workers' own warnings stay in their logs
        _note_truncation(s.truncated, s.pairs, s.max_length)
    typer.echo(
        f"reranked {s.pairs} pairs for {s.queries} queries ({engine}: {s.workers} workers, {s.blocks} blocks, "
        f"{s.retries} retried, {s.worker_restarts} worker restarts) in {s.seconds:.1f} s, "
        f"{s.pairs_per_s:,.0f} pairs/s; wrote {written} rows to {output}",
        err=True,
    )
    typer.echo(json.dumps({**s.to_dict(), **skipped, "output": str(output), "rows": written}), err=True)


# ---------------------------------------------------------------------- score


@app.command()
@_cli_errors
def score(
    input_file: Annotated[
        Path, typer.Argument(help="JSONL of pairs: {'query','document'} or {'text_a','text_b'} or [a, b].")
    ],
    model: ModelOpt = "default",
    backend: BackendOpt = "auto",
    max_length: MaxLenOpt = None,
    activation: ActivationOpt = None,
    fmt: FormatOpt = "jsonl",
    family: FamilyOpt = None,
    template: TemplateOpt = None,
    instruction: InstructionOpt = None,
) -> None:
    """Score each pair of a JSONL file; print one JSON object per pair, in input order."""
    from crossrank.io import read_jsonl

    _model_options(family, template, instruction)
    style = _check_format(fmt)
    _check_backend(backend)
    _check_activation(activation)
    pairs = list(_pairs(input_file, _raw_lines(input_file, read_jsonl)))
    if not pairs:
        raise InputError(f"{input_file} holds no pairs")
    ce = _load(model, backend, max_length, activation=activation)
    result = ce.score_details(pairs, activation=activation)
    rows = []
    for i, s in enumerate(result.scores.tolist()):
        value: Any = (
            round(s, 6) if isinstance(s, float) else {lab: round(v, 6) for lab, v in zip(ce.labels, s, strict=True)}
        )
        rows.append({"index": i, "score": value, "truncated": bool(result.truncated[i])})
    if style == "table":
        _print_table(rows, title=f"scores ({ce.name})", text_rows=[f"{q} | {d}" for q, d in pairs])
    else:
        _print_jsonl(rows)


def _raw_lines(path: Path, reader: Callable[[Path], Iterator[dict[str, Any]]]) -> Iterator[Any]:
    """Yield JSONL values, allowing arrays ([a, b]) as well as objects."""
    try:
        yield from reader(path)
    except InputError as err:
        if "must be a JSON object (got list)" not in str(err):
            raise
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as jerr:
                    raise InputError(f"{path}:{lineno} is not valid JSON ({jerr.msg}); fix that line") from jerr


def _pairs(path: Path, values: Iterator[Any]) -> Iterator[tuple[str, str]]:
    for i, v in enumerate(values, start=1):
        if isinstance(v, list) and len(v) == 2:
            yield v[0], v[1]
            continue
        if isinstance(v, dict):
            for a, b in (
                ("query", "document"),
                ("text_a", "text_b"),
                ("sentence1", "sentence2"),
                ("query", "text"),
            ):
                if a in v and b in v:
                    yield v[a], v[b]
                    break
            else:
                raise InputError(f"{path}: record {i} needs 'query' and 'document' fields (got keys {sorted(v)})")
            continue
        raise InputError(f"{path}: record {i} must be an object or a [query, document] array (got {v!r:.60})")


# ---------------------------------------------------------------------- models


@models_app.callback()
@_cli_errors
def models_list(ctx: typer.Context, fmt: FormatOpt = "jsonl") -> None:
    """List the built-in models, where their files are, and which engine `auto` picks on this CPU and why."""
    if ctx.invoked_subcommand is not None:
        return
    from crossrank.cpu import available_cores, cpu_flags
    from crossrank.engine import choose_backend
    from crossrank.errors import ModelError, ModelNotFoundError
    from crossrank.models import BUILTINS
    from crossrank.models.source import resolve

    style = _check_format(fmt)
    rows: list[dict[str, Any]] = []
    for m in BUILTINS.values():
        engine, why = "", ""
        try:
            where, status = str(m.folder()), "ok (sha256 checked)"
            files = resolve(m.name)
            if files.onnx_file is not None:
                engine, why = choose_backend(files, "auto")
            else:
                engine, why = "torch", "the package ships fp32 safetensors only"
        except (ModelNotFoundError, ModelError) as err:
            where, status = "", f"unavailable: {err}"
        rows.append(
            {
                "name": m.name,
                "kind": m.kind,
                "aliases": list(m.aliases),
                "source": m.hf_id or "crossrank (distilled from the default)",
                "package": f"{m.package}=={m.version}",
                "path": where,
                "status": status,
                "engine": engine,
                "engine_reason": why,
                "description": m.description,
            }
        )
    cpu = f"this CPU: {'+'.join(sorted(cpu_flags())) or 'instruction set unknown'}; {available_cores()} cores usable"
    if style == "jsonl":
        _print_jsonl(rows)
        typer.echo(cpu, err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="built-in models", caption=cpu)
    for col in ("name", "aliases", "engine", "why", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["aliases"]), r["engine"], r["engine_reason"], r["status"])
    Console().print(table)


@models_app.command("prepare")
@_cli_errors
def models_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="Built-in models to prepare (default: default). 'all' for every one.")
    ] = None,
    openvino: Annotated[
        bool | None,
        typer.Option(
            "--openvino/--no-openvino",
            help="Also build the static int8 OpenVINO graph (about a minute per model; the fastest engine on CPUs "
            "with int8 dot products). Default: only where this CPU has them and OpenVINO is installed.",
        ),
    ] = None,
) -> None:
    """Build, once and up front, every graph a built-in model needs (for Dockerfiles and CI caches)."""
    import time

    from crossrank.cpu import int8_dot_product
    from crossrank.errors import ModelNotFoundError
    from crossrank.models import BUILTINS
    from crossrank.models.cache import cache_dir
    from crossrank.models.registry import lookup

    wanted = list(names or ["default"])
    if wanted == ["all"]:
        wanted = list(BUILTINS)
    models = []
    for name in wanted:
        m = lookup(name)
        if m is None:
            raise ModelNotFoundError(f"no built-in model called {name!r}; `crossrank models` lists them")
        models.append(m)
    from crossrank.models.source import has_openvino

    build_ov = (int8_dot_product() and has_openvino()) if openvino is None else openvino
    for m in models:
        if "model.onnx" not in m.files:
            typer.echo(f"{m.name}: nothing to build (fp32 weights, torch backend)", err=True)
            continue
        start = time.perf_counter()
        typer.echo(f"{m.name}: building the ONNX Runtime graph ...", err=True)
        path = m.optimized_onnx("int8" if m.kind == "cross-encoder" else "fp32")
        typer.echo(f"{m.name}: {path.name} ready in {time.perf_counter() - start:.1f} s", err=True)
        if build_ov:
            start = time.perf_counter()
            typer.echo(f"{m.name}: calibrating the static int8 OpenVINO graph (about a minute) ...", err=True)
            folder = m.openvino_int8()
            typer.echo(f"{m.name}: {folder.name} ready in {time.perf_counter() - start:.1f} s", err=True)
    typer.echo(f"cache: {cache_dir()}", err=True)


@models_app.command("convert")
@_cli_errors
def models_convert(
    name: Annotated[str, typer.Argument(help="Built-in model name, e.g. default.")],
    output: Annotated[Path, typer.Option(help="Folder to write the fp32 Hugging Face model to.")],
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Write the fp32 Hugging Face folder (dequantized weights) of a built-in ONNX model."""
    from crossrank.models.convert import convert_builtin

    out = convert_builtin(name, output, overwrite=overwrite)
    typer.echo(
        f"wrote {out} (loads with transformers, sentence-transformers and crossrank --backend torch)",
        err=True,
    )


@models_app.command("export")
@_cli_errors
def models_export(
    source: Annotated[str, typer.Argument(help="Hugging Face cross-encoder: folder or hub id.")],
    output: Annotated[Path, typer.Option(help="Folder to write the optimised model to.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", help="crossrank (an optimised folder crossrank loads) or vespa (a folder for Vespa's ranking)."
        ),
    ] = "crossrank",
    quantize: Annotated[
        str | None,
        typer.Option(
            help="crossrank: int8 (static for OpenVINO, dynamic for ONNX Runtime, the default), bf16 or none; "
            "vespa: none (fp32, the default) or int8 (dynamic)."
        ),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="vespa: tokens per pair (default: the model's limit, at most 512).")
    ] = None,
    query_tokens: Annotated[int, typer.Option(help="vespa: most query tokens Vespa keeps.")] = 32,
    check_data: Annotated[
        Path | None, typer.Option(help="BEIR folder (corpus, queries, qrels) to check the export against the source.")
    ] = None,
    check_run: Annotated[Path | None, typer.Option(help="First-stage TREC run whose candidates are compared.")] = None,
    check_queries: Annotated[int, typer.Option(help="Queries of the run to compare.")] = 43,
    depth: Annotated[int, typer.Option(help="Candidates per query to compare.")] = 100,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Export a Hugging Face cross-encoder to an optimised ONNX/OpenVINO folder, or a folder for Vespa; check it."""
    from crossrank.models.export import export_optimized

    if format_ not in ("crossrank", "vespa"):
        raise InputError(f"--format must be 'crossrank' or 'vespa' (got {format_!r})")
    if (check_data is None) != (check_run is None):
        raise InputError("--check-data and --check-run go together")
    given: dict[str, Any] = {} if quantize is None else {"quantize": quantize}
    if format_ == "vespa":
        from crossrank.models.vespa import export_vespa

        if check_data is not None:
            raise InputError("--check-data compares crossrank folders; a Vespa export is checked by its tests")
        out = export_vespa(
            source, output, max_length=max_length, query_tokens=query_tokens, overwrite=overwrite, **given
        )
        typer.echo(f"wrote {out} (see {out / 'README.md'})", err=True)
        return
    out = export_optimized(source, output, overwrite=overwrite, **given)
    typer.echo(f"wrote {out}", err=True)
    if check_data is None or check_run is None:
        return
    from crossrank import CrossEncoder
    from crossrank.evaluate.agreement import agreement
    from crossrank.io import read_qrels, read_run_candidates

    run = read_run_candidates(
        check_run, check_data / "queries.jsonl", check_data / "corpus.jsonl", depth=depth, skip_missing=True
    )
    qids, qtexts, cands = run.query_ids[:check_queries], run.queries[:check_queries], run.documents[:check_queries]

    def scores(ce: Any) -> dict[str, dict[str, float]]:
        rankings = ce.rerank_many(qtexts, cands, query_ids=qids)
        return {r.query_id: {h.doc_id: h.score for h in r.hits} for r in rankings}

    reference = scores(CrossEncoder(source, backend="torch", progress=True))
    exported = CrossEncoder(out, progress=True)
    candidate = scores(exported)
    qrels_file = check_data / "qrels" / "test.tsv"
    report = agreement(reference, candidate, read_qrels(qrels_file) if qrels_file.is_file() else None)
    written = json.loads((out / "crossrank.json").read_text(encoding="utf-8"))["export"]["quantize"]
    result = {"output": str(out), "backend": exported.backend_name, "quantize": written, **report.to_dict()}
    (out / "export_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _print_jsonl([result])


# ---------------------------------------------------------------------- output


def _print_jsonl(rows: list[dict[str, Any]]) -> None:
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _print_table(rows: list[dict[str, Any]], *, title: str, text_rows: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    keys = [k for k in rows[0] if k != "text"] if rows else []
    for key in keys:
        table.add_column(key, justify="right" if key in ("rank", "index", "score") else "left")
    table.add_column("text", overflow="fold", ratio=1)
    for row, txt in zip(rows, text_rows, strict=True):
        table.add_row(*(str(row[key]) for key in keys), txt if len(txt) <= 300 else txt[:297] + "...")
    Console().print(table)


# the index and search commands live in their own module and register on `app`
from crossrank.cli import calibrate_cmd as _calibrate_cmd  # noqa: E402, F401
from crossrank.cli import eval_cmds as _eval_cmds  # noqa: E402
from crossrank.cli import monitor_cmds as _monitor_cmds  # noqa: E402, F401
from crossrank.cli import search_cmds as _search_cmds  # noqa: E402
from crossrank.cli import serve_cmd as _serve_cmd  # noqa: E402, F401
from crossrank.cli import train_cmds as _train_cmds  # noqa: E402, F401
from crossrank.cli import tune_cmd as _tune_cmd  # noqa: E402, F401

del _search_cmds, _eval_cmds


def main() -> None:
    """Run the command line."""
    app()


if __name__ == "__main__":
    main()
