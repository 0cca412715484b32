"""``crossrank train`` (fine-tune on pairs, triples or mined BEIR groups) and ``crossrank distill``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crossrank.cli.app import _cli_errors, app
from crossrank.errors import InputError


def _rank_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        low, high = (int(x) for x in value.split("-"))
    except ValueError as err:
        raise InputError(f"--rank-range must look like 10-50 (got {value!r})") from err
    if not 1 <= low < high:
        raise InputError(f"--rank-range needs 1 <= low < high (got {value!r})")
    return low, high + 1


@app.command("train")
@_cli_errors
def train_cmd(
    output: Annotated[Path, typer.Option(help="The run's folder: checkpoints, best/, model/ (HF) and onnx/.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Start: built-in, HF cross-encoder folder, or plain encoder.")
    ] = "default",
    pairs: Annotated[Path | None, typer.Option(help="JSONL of labelled pairs: {query, document, label}.")] = None,
    triples: Annotated[Path | None, typer.Option(help="JSONL of triples: {query, positive, negative}.")] = None,
    data: Annotated[Path | None, typer.Option(help="BEIR folder: groups are mined from its qrels split.")] = None,
    split: Annotated[str, typer.Option(help="qrels split of --data to train on.")] = "train",
    candidates: Annotated[
        Path | None, typer.Option(help="First stage for mining: a TREC run or an index folder (default: BM25).")
    ] = None,
    retriever: Annotated[
        str | None,
        typer.Option(
            help="bm25, dense or hybrid: how an index given as --candidates, or else the corpus, is searched."
        ),
    ] = None,
    depth: Annotated[int, typer.Option(help="First-stage candidates considered for negatives.")] = 100,
    negatives: Annotated[int, typer.Option(help="Negatives per group.")] = 7,
    skip_top: Annotated[int, typer.Option(help="Never take negatives from the first stage's top n.")] = 0,
    rank_range: Annotated[str | None, typer.Option(help="Sample negatives from these ranks, e.g. 10-50.")] = None,
    random_negatives: Annotated[int, typer.Option(help="Of the negatives, how many come from the whole corpus.")] = 0,
    groups_per_query: Annotated[int, typer.Option(help="Groups per query (each with another positive).")] = 1,
    rel: Annotated[int, typer.Option(help="Grade from which a judged document is a positive.")] = 1,
    teacher: Annotated[
        str | None, typer.Option(help="Teacher model: scores groups (for kl, margin-mse, --teacher-margin).")
    ] = None,
    teacher_margin: Annotated[
        float | None, typer.Option(help="Drop negatives the teacher scores within this of the positive.")
    ] = None,
    label_scale: Annotated[float, typer.Option(help="Divide --pairs labels by this (e.g. 5 for 0-5).")] = 1.0,
    loss: Annotated[str, typer.Option(help="bce, listwise, ranknet, margin, margin-mse or kl.")] = "listwise",
    epochs: Annotated[float, typer.Option(help="Passes over the groups.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Groups per forward pass.")] = 8,
    accumulation: Annotated[int, typer.Option(help="Forward passes per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 2e-5,
    warmup: Annotated[float, typer.Option(help="Share of steps warming up.")] = 0.1,
    max_length: Annotated[int, typer.Option(help="Tokens per pair, as at inference.")] = 256,
    precision: Annotated[str, typer.Option(help="auto (bf16 where the CPU has it), bf16 or fp32.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of data order, dropout and mining.")] = 13,
    eval_every: Annotated[int, typer.Option(help="Evaluate on the dev set every n steps (0: at the end).")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every n steps.")] = 100,
    dev_data: Annotated[Path | None, typer.Option(help="BEIR folder for the dev set (keeps the best step).")] = None,
    dev_split: Annotated[str, typer.Option(help="qrels split of --dev-data.")] = "dev",
    dev_run: Annotated[Path | None, typer.Option(help="Dev candidates: a TREC run (default: BM25).")] = None,
    dev_depth: Annotated[int, typer.Option(help="Dev candidates per query.")] = 100,
    dev_measure: Annotated[str, typer.Option(help="ir-measures measure that picks the best step.")] = "nDCG@10",
    export: Annotated[str, typer.Option(help="int8 (if dev quality holds), bf16, none or skip.")] = "int8",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the run's summary here.")] = None,
) -> None:
    """Fine-tune a cross-encoder on labelled pairs, triples, or groups mined from a BEIR folder's first stage.

    Everything is checked before training starts; a killed run started again with the same
    options resumes from its last checkpoint.
    """
    from crossrank.rerank.cross_encoder import CrossEncoder
    from crossrank.train.data import (
        MiningReport,
        MiningSettings,
        corpus_candidates,
        first_stage_candidates,
        load_beir,
        mine_groups,
        read_pairs,
        read_triples,
    )
    from crossrank.train.distill import load_dev
    from crossrank.train.trainer import TrainConfig, train

    given = [x for x in (pairs, triples, data) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one training set: --pairs, --triples or --data")
    cfg = TrainConfig(
        loss=loss,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        accumulation=accumulation,
        learning_rate=lr,
        warmup=warmup,
        max_length=max_length,
        precision=precision,  # type: ignore[arg-type]
        seed=seed,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
    )
    summary: dict[str, Any] = {}
    if pairs is not None:
        groups = read_pairs(pairs, label_scale=label_scale)
    elif triples is not None:
        groups = read_triples(triples)
    else:
        assert data is not None
        corpus, queries, qrels = load_beir(data, split)
        source: Any = candidates
        if source is None:
            judged = {q: t for q, t in queries.items() if q in qrels}
            cands = corpus_candidates(data / "corpus.jsonl", judged, depth=depth, retriever=retriever or "bm25")
        else:
            cands = first_stage_candidates(source, queries, depth=depth, retriever=retriever)
        settings = MiningSettings(
            negatives=negatives,
            depth=depth,
            skip_top=skip_top,
            rank_range=_rank_range(rank_range),
            random_negatives=random_negatives,
            rel=rel,
            groups_per_query=groups_per_query,
            teacher_margin=teacher_margin,
            seed=seed,
        )
        report = MiningReport()
        t = CrossEncoder(teacher, calibration=None) if teacher else None
        if teacher_margin is not None and t is None:
            raise InputError("--teacher-margin needs --teacher")
        groups = mine_groups(corpus, queries, qrels, cands, settings=settings, teacher=t, report=report)
        summary["mining"] = {"queries": report.queries, "groups": report.groups, "notes": report.notes()}
        for note in report.notes():
            typer.echo(f"note: {note}", err=True)
    dev = None
    if dev_data is not None:
        dev = load_dev(
            {
                "data": str(dev_data),
                "split": dev_split,
                "run": str(dev_run) if dev_run else None,
                "depth": dev_depth,
                "measure": dev_measure,
                "rel": rel if rel > 1 else None,
            },
            seed=seed,
        )
    result = train(model, groups, output, config=cfg, dev=dev, resume=resume, progress=progress)
    summary.update(result.summary())
    if export != "skip":
        from crossrank.train.finish import export_trained

        summary["export"] = export_trained(result.model, output / "onnx", quantize=export, dev=dev)
    typer.echo(json.dumps(summary, indent=2))
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


@app.command("distill")
@_cli_errors
def distill_cmd(
    recipe: Annotated[Path, typer.Option(help="TOML recipe: teacher, student, [[source]], [train], [dev], export.")],
    output: Annotated[Path | None, typer.Option(help="Override the recipe's output folder.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override [train] max_steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Distil a teacher into a student: teacher scores on first-stage candidates (cached), then KL or Margin-MSE.

    One command runs the whole recipe: candidates, teacher scores, student initialisation (a
    subset of the teacher's layers, or a smaller encoder), training, export. See
    `recipes/fast.toml` for the recipe of the built-in `fast` model.
    """
    from crossrank.train.distill import load_recipe, run_recipe

    r = load_recipe(recipe)
    if output is not None:
        r.output = str(output)
    if max_steps is not None:
        r.train["max_steps"] = max_steps
    summary = run_recipe(r, progress=progress, resume=resume)
    typer.echo(json.dumps(summary, indent=2))
