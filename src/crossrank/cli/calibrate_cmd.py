"""``crossrank calibrate``: fit a map from a model's scores to probabilities of relevance."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from crossrank._text import plural
from crossrank.cli.app import _cli_errors, app
from crossrank.errors import InputError

DataOpt = Annotated[
    Path | None,
    typer.Option(help="Folder to fit on: corpus.jsonl, queries.jsonl, qrels/<split>.tsv or qrels.tsv (as eval)."),
]
RunOpt = Annotated[
    Path | None, typer.Option(help="First-stage TREC run over --data whose top --depth candidates are used.")
]


@app.command("calibrate")
@_cli_errors
def calibrate(
    data: DataOpt = None,
    run: RunOpt = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Built-in name, model folder, .onnx file or hub id.")
    ] = "default",
    depth: Annotated[int, typer.Option(help="Candidates per query; use the depth you rerank at.")] = 100,
    rel: Annotated[int, typer.Option(help="Grade from which a document counts as relevant (TREC DL: 2).")] = 1,
    split: Annotated[str, typer.Option(help="qrels split of --data (and of --heldout-data).")] = "test",
    method: Annotated[str, typer.Option(help="platt (logistic, 2 parameters) or isotonic (monotone steps).")] = "platt",
    heldout_data: Annotated[
        Path | None, typer.Option(help="BEIR folder to measure on (not fitted on); needs --heldout-run.")
    ] = None,
    heldout_run: Annotated[Path | None, typer.Option(help="First-stage TREC run over --heldout-data.")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Where to save the mapping (default: beside the model, or the cache for built-ins)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    backend: Annotated[str, typer.Option(help="auto, openvino, onnx or torch.")] = "auto",
    remove: Annotated[
        bool, typer.Option("--remove", help="Delete --model's saved calibration: scores go back to its sigmoid.")
    ] = False,
) -> None:
    """Fit Platt scaling or isotonic regression on judged pairs and save it beside the model.

    Afterwards `score`, `rerank` and CrossEncoder(model) return calibrated probabilities; rankings do not change.
    Expected calibration error (ECE) is printed before (the model's sigmoid) and after, on --data and --heldout-data.
    `crossrank calibrate --remove -m MODEL` deletes the saved calibration again.
    """
    from rich.console import Console
    from rich.table import Table

    from crossrank import CrossEncoder
    from crossrank.evaluate.calibrate import calibrate_encoder, default_calibration_path, labelled_pairs

    if remove:
        _remove(model, given=[name for name, v in (("--data", data), ("--run", run), ("--output", output)) if v])
        return
    if data is None or run is None:
        missing = " and ".join(name for name, v in (("--data", data), ("--run", run)) if v is None)
        raise InputError(
            f"calibrate needs {missing}: --data DIR (corpus, queries, judgments) and --run RUN (its first-stage "
            "run); or --remove -m MODEL to delete a saved calibration"
        )
    if method not in ("platt", "isotonic"):
        raise InputError(f"--method must be platt or isotonic (got {method!r})")
    if (heldout_data is None) != (heldout_run is None):
        raise InputError("--heldout-data and --heldout-run go together: give both, or neither")
    fit = labelled_pairs(data, run, depth=depth, rel=rel, split=split)
    held = None
    if heldout_data is not None and heldout_run is not None:
        held = labelled_pairs(heldout_data, heldout_run, depth=depth, rel=rel, split=split)
    for name, pairs in (("fit", fit), ("held-out", held)):
        if pairs is not None and (pairs.skipped_missing_text or pairs.skipped_queries):
            typer.echo(
                f"note: {name} data: skipped {plural(pairs.skipped_missing_text, 'judged candidate')} without text "
                f"and {plural(pairs.skipped_queries, 'run query', 'run queries')} without judgments",
                err=True,
            )
    # calibration=None: "before" is the model's own sigmoid, not an earlier calibration
    ce = CrossEncoder(model, backend=backend, calibration=None, progress=True)
    result = calibrate_encoder(ce, fit, method=method, heldout=held)  # type: ignore[arg-type]
    assert ce.files is not None  # loaded from a name or path
    default = default_calibration_path(ce.files)
    target = result.calibration.save(output if output is not None else default)

    # short headers and a caption: the table stays one line a row in an 80-column terminal
    table = Table(
        title=f"{method} calibration of {ce.name}",
        caption=f"relevant: grade >= {rel}, top {depth} · ECE before: sigmoid, after: {method}",
    )
    table.add_column("data", overflow="fold", min_width=12)
    for col in ("pairs", "relevant", "ECE before", "ECE after"):
        table.add_column(col, justify="right", no_wrap=True)
    checks = [("fit", f"{data.resolve().name} (in-sample)", result.fit)]
    if result.heldout is not None and heldout_data is not None:
        checks.append(("held-out", heldout_data.resolve().name, result.heldout))
    for label, where, check in checks:
        table.add_row(
            f"{label}: {where}",
            str(check.pairs),
            str(check.positives),
            f"{check.ece_before:.4f}",
            f"{check.ece_after:.4f}",
        )
    Console().print(table)
    if held is None:
        typer.echo(
            "warning: ECE on the fitting data is optimistic; measure on held-out data with "
            "--heldout-data DIR --heldout-run RUN",
            err=True,
        )
    undo = f"crossrank calibrate --remove -m {shlex.quote(model)}"
    if target.resolve() == default.resolve():
        typer.echo(
            f"from now on `crossrank score` and `crossrank rerank` with -m {shlex.quote(model)} (and "
            f"CrossEncoder({model!r})) return calibrated probabilities: saved the calibration to {target}; "
            f"undo with `{undo}`",
            err=True,
        )
    else:
        typer.echo(
            f"saved the calibration to {target}; score and rerank do not use it from there (they look for "
            f"{default}): load it with CrossEncoder({model!r}, calibration={str(target)!r}), or save it without "
            "--output to make it the default",
            err=True,
        )
    if json_out is not None:
        payload = {
            **result.to_dict(),
            "saved_to": str(target),
            "fit_data": fit.summary(),
            "heldout_data": held.summary() if held is not None else None,
        }
        json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _remove(model: str, *, given: list[str]) -> None:
    """Delete ``model``'s calibration from its default place and say what changed."""
    from crossrank.evaluate.calibrate import default_calibration_path, remove_default_calibration
    from crossrank.models.source import resolve

    if given:
        raise InputError(
            f"--remove takes only -m MODEL (got {', '.join(given)}); it deletes the calibration saved by a plain "
            "`crossrank calibrate -m MODEL`"
        )
    files = resolve(model)
    removed = remove_default_calibration(files)
    if removed is None:
        typer.echo(
            f"no calibration saved for {model} (looked for {default_calibration_path(files)}); nothing to remove",
            err=True,
        )
        return
    typer.echo(
        f"removed the calibration of {model} ({removed}): `score` and `rerank` return the model's own scores again",
        err=True,
    )
