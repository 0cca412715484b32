"""``crossrank tune``: choose whether to rerank, the depth and the blend weight from judged queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossrank.cli.app import _cli_errors, app
from crossrank.errors import InputError


@app.command("tune")
@_cli_errors
def tune_cmd(
    qrels: Annotated[Path, typer.Option(help="Judgments of a few queries: TREC qrels or BEIR tsv (the judge page's).")],
    queries: Annotated[
        Path | None,
        typer.Option(help="The queries' texts: BEIR queries.jsonl (default: the judge page's sidecar beside --qrels)."),
    ] = None,
    index: Annotated[Path | None, typer.Option(help="Index folder: its first stage finds the candidates.")] = None,
    retriever: Annotated[str | None, typer.Option(help="With --index: bm25, dense or hybrid (default: its own).")] = (
        None
    ),
    run: Annotated[Path | None, typer.Option(help="Or a first-stage TREC run over --corpus.")] = None,
    corpus: Annotated[Path | None, typer.Option(help="With --run: the corpus.jsonl it ranks.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The reranker: built-in name, folder or hub id.")] = (
        "default"
    ),
    depth: Annotated[int, typer.Option(help="The deepest depth tried (10, 20, 30, 50, 100 up to it).")] = 100,
    blend: Annotated[str, typer.Option(help="How a blend takes the cross-encoder: probability or minmax.")] = (
        "probability"
    ),
    output: Annotated[Path, typer.Option(help="Where to write the chosen settings (JSON).")] = Path("settings.json"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON here.")] = None,
    backend: Annotated[str, typer.Option(help="auto, openvino, onnx or torch.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation splits and the bootstrap.")] = 0,
) -> None:
    """Choose whether to rerank, how deep and the blend weight, from a few judged queries.

    Every setting is scored on each judged query; what choosing is worth is cross-validated, and
    reranking is recommended only when its gain over the first stage is positive with 95%
    confidence. Writes the settings that `search --settings`, `serve --settings` and
    Pipeline(settings=) load, and prints each setting's nDCG@10 with its 95% interval.
    """
    from rich.console import Console
    from rich.table import Table

    from crossrank import CrossEncoder
    from crossrank.evaluate.tune import judged_from_index, judged_from_run, tune
    from crossrank.io import read_beir_queries, read_qrels
    from crossrank.serve.judge import judged_query_texts

    if (index is None) == (run is None):
        raise InputError("tune needs one first stage: --index DIR, or --run RUN with --corpus CORPUS")
    if run is not None and corpus is None:
        raise InputError("--run needs --corpus: the corpus.jsonl its document ids come from")
    if blend not in ("probability", "minmax"):
        raise InputError(f"--blend must be probability or minmax (got {blend!r})")
    judged = read_qrels(qrels)
    texts = judged_query_texts(qrels) if queries is None else read_beir_queries(queries)
    asked = {q: texts[q] for q in judged if q in texts}
    if not asked:
        where = queries if queries is not None else "the judge page's sidecar"
        raise InputError(f"none of the {len(judged)} judged queries in {qrels} has a text in {where}; check the ids")
    ce = CrossEncoder(model, backend=backend, progress=True)
    if index is not None:
        found = judged_from_index(ce, index, asked, depth=depth, retriever=retriever)
    else:
        assert run is not None and corpus is not None
        if queries is None:  # the sidecar's texts, as the queries file the run loader reads
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                queries = Path(tmp) / "queries.jsonl"
                queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in asked.items()))
                found = judged_from_run(ce, run, queries, corpus, depth=depth, only=list(asked))
        else:
            found = judged_from_run(ce, run, queries, corpus, depth=depth, only=list(asked))
    report = tune(found, judged, blend=blend, activation=ce.activation, seed=seed, model=model)  # type: ignore[arg-type]
    target = report.settings.save(output)

    table = Table(title=f"nDCG@10 on {report.queries} judged queries (95% intervals over queries)")
    for col in ("setting", "nDCG@10", "95% interval"):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for label, (mean, lo, hi) in report.means.items():
        mark = " <- chosen" if label == report.chosen else ""
        table.add_row(label + mark, f"{mean:.4f}", f"{lo:.4f} - {hi:.4f}")
    Console(stderr=True).print(table)
    typer.echo(report.reason, err=True)
    typer.echo(
        f"wrote {target}: {report.settings.describe()}; use it with `crossrank search --settings {target}` "
        f"or `crossrank serve --settings {target}`",
        err=True,
    )
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
