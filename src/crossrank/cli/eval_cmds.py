"""``crossrank eval``: measures of one or more runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crossrank.cli.app import _cli_errors, app

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
    qrels: QrelsOpt,
    run: Annotated[list[Path], typer.Option(help="A TREC run; repeat for several runs side by side.")],
    measures: Annotated[str, typer.Option(help="ir-measures names.")] = "nDCG@10 RR@10 R@100 AP P@10",
    rel: RelOpt = None,
    missing: Annotated[str, typer.Option(help="Judged queries a run lacks: skip (trec_eval) or zero (-c).")] = "skip",
    skip_bad: SkipBadOpt = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write measures (and per-query values) here.")] = None,
) -> None:
    """Evaluate runs with ir-measures (the numbers trec_eval gives) and print them side by side."""
    from rich.console import Console
    from rich.table import Table

    result = _evaluate_files(qrels, run, measures, rel, missing, skip_bad)
    table = Table(title=f"{len(result.queries)} judged queries" + (f", relevant = grade >= {rel}" if rel else ""))
    table.add_column("run")
    for m in result.measures:
        table.add_column(m, justify="right")
    for name, values in result.aggregate.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in result.measures))
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")


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
    table = Table(title=f"vs {base}: * = both tests p < {alpha}; [95% CI of the difference]; wins/ties/losses")
    table.add_column("run")
    for m in result.measures:
        table.add_column(m, justify="right")
    table.add_row(base + " (baseline)", *(f"{result.aggregate[base][m]:.4f}" for m in result.measures))
    for name in names[1:]:
        cells = []
        rows[name] = {}
        for m in result.measures:
            qs = sorted(set(result.per_query[base][m]) & set(result.per_query[name][m]))
            cmp = paired_comparison(
                [result.per_query[base][m][q] for q in qs], [result.per_query[name][m][q] for q in qs]
            )
            rows[name][m] = cmp.to_dict()
            mark = "*" if cmp.significant(alpha) else ""
            cells.append(
                f"{cmp.system:.4f}{mark} ({cmp.mean_diff:+.4f} [{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}]) "
                f"{cmp.wins}/{cmp.ties}/{cmp.losses}"
            )
        table.add_row(name, *cells)
    Console(width=200).print(table)
    if json_out is not None:
        out = {"baseline": base, "alpha": alpha, "aggregate": result.aggregate, "comparisons": rows}
        json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
