"""``crossrank eval``: measures of one or more runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossrank.cli.app import _cli_errors, app


@app.command("eval")
@_cli_errors
def eval_runs(
    qrels: Annotated[Path, typer.Option(help="Judgments: BEIR tsv (with header) or TREC qrels.")],
    run: Annotated[list[Path], typer.Option(help="A TREC run; repeat for several runs side by side.")],
    measures: Annotated[str, typer.Option(help="ir-measures names.")] = "nDCG@10 RR@10 R@100 AP P@10",
    rel: Annotated[
        int | None, typer.Option(help="Grade from which binary measures count a document relevant (TREC DL: 2).")
    ] = None,
    missing: Annotated[str, typer.Option(help="Judged queries a run lacks: skip (trec_eval) or zero (-c).")] = "skip",
    skip_bad: Annotated[bool, typer.Option(help="Skip (and count) duplicate run entries instead of failing.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write measures (and per-query values) here.")] = None,
) -> None:
    """Evaluate runs with ir-measures (the numbers trec_eval gives) and print them side by side."""
    from rich.console import Console
    from rich.table import Table

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
    table = Table(title=f"{len(result.queries)} judged queries" + (f", relevant = grade >= {rel}" if rel else ""))
    table.add_column("run")
    for m in result.measures:
        table.add_column(m, justify="right")
    for name, values in result.aggregate.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in result.measures))
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
