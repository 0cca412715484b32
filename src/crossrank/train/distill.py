"""Distil a cross-encoder: a teacher scores first-stage candidates, a student learns the scores.

The recipe, in one call (:func:`distill`) or one command (``crossrank distill --recipe r.toml``):

1. for each source (a BEIR folder and a split), take the queries of that split and their
   first-stage candidates: a TREC run, or BM25 over the source's own corpus, or BM25 over
   another corpus (a *pool*, e.g. MS MARCO passages for questions from another set);
2. the teacher scores every (query, candidate) pair as raw logits; the scores are cached on disk
   (SQLite, keyed by the teacher and the texts), so a second run or a resume scores nothing again;
3. each query gives groups of ``group_size`` candidates: the teacher's best first, then a seeded
   sample of the rest, half from the teacher's next best (hard) and half from the remainder;
4. the student starts from a subset of the teacher's own layers (``"layers:0,2,4,6,8,10"``), from
   the teacher with its least important attention heads and feed-forward neurons removed in every
   layer (``"prune:heads=6,ffn=768"``), or from another checkpoint (a smaller encoder gets a new
   head), and learns with the KL or Margin-MSE loss (:mod:`crossrank.train.losses`);
5. the trained folder is exported like any model (``crossrank models export``).

Labels are never read: distillation needs queries and candidates only, so it can use any
question set, judged or not.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrank._deps import require
from crossrank._progress import counting
from crossrank.errors import ConfigError, InputError
from crossrank.train.data import Group, corpus_candidates, doc_text

__all__ = [
    "DistillReport",
    "Source",
    "distill_groups",
    "layer_student",
    "parse_layers",
    "parse_prune",
    "pruned_student",
    "source_candidates",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    """Where distillation queries and candidates come from.

    Attributes:
        data: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv). A folder with
            queries.jsonl alone works when every candidate comes from a ``pool`` (queries without
            documents of their own, e.g. a query log).
        split: only queries judged in this split are used (so a test split stays unseen);
            ``None`` (``split = "all"`` in a recipe) takes every query of queries.jsonl.
        run: a TREC run with the candidates (relative paths are under ``data``); ``None`` searches
            the source's own corpus with ``retriever``.
        pool: another BEIR folder or JSONL corpus whose top ``pool_depth`` (by ``retriever``) is
            added to each query's candidates (e.g. MS MARCO passages for questions from a QA set).
        retriever: the first stage that finds candidates where no run gives them: ``"bm25"``,
            ``"dense"`` (the default bi-encoder) or ``"hybrid"`` (both, fused by RRF).
        depth: candidates per query from the run or from BM25.
        pool_depth: candidates per query from the pool.
        max_queries: use at most this many queries (a seeded sample); ``None`` uses all.
        groups_per_query: groups made per query of this source; ``None`` takes the recipe's.
        prepare: the command that creates ``data`` when it is not shipped (named in the error if
            the folder is missing).
    """

    data: str
    split: str | None = "train"
    run: str | None = None
    pool: str | None = None
    depth: int = 30
    pool_depth: int = 0
    max_queries: int | None = None
    groups_per_query: int | None = None
    prepare: str | None = None
    retriever: str = "bm25"

    def __post_init__(self) -> None:
        if self.retriever not in ("bm25", "dense", "hybrid"):
            raise ConfigError(f"source {self.data}: retriever must be bm25, dense or hybrid (got {self.retriever!r})")
        if self.depth < 1 or self.pool_depth < 0:
            raise ConfigError(f"source {self.data}: depth must be >= 1 and pool_depth >= 0")
        if self.pool_depth and not self.pool:
            raise ConfigError(f"source {self.data}: pool_depth needs a pool")
        if self.groups_per_query is not None and self.groups_per_query < 1:
            raise ConfigError(f"source {self.data}: groups_per_query must be >= 1 (got {self.groups_per_query})")


@dataclass(slots=True)
class DistillReport:
    """What the data stage did: queries, pairs scored and groups made, per source."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    pairs: int = 0
    groups: int = 0


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """Return the layer indices of ``"layers:0,2,4"`` (or ``"layers:6"``: 6 evenly spaced layers).

    Raises:
        ConfigError: the spec is malformed or names a layer the teacher lacks.
    """
    body = spec.split(":", 1)[1] if spec.startswith("layers:") else spec
    try:
        items = [int(x) for x in body.replace(" ", "").split(",") if x]
    except ValueError as err:
        raise ConfigError(f"student layers must look like 'layers:0,2,4,6,8,10' or 'layers:6' (got {spec!r})") from err
    if len(items) == 1:
        n = items[0]
        if not 1 <= n <= num_layers:
            raise ConfigError(f"the teacher has {num_layers} layers; cannot keep {n}")
        return sorted({round(i * (num_layers - 1) / max(1, n - 1)) for i in range(n)}) if n > 1 else [num_layers - 1]
    if not items or sorted(set(items)) != items or items[0] < 0 or items[-1] >= num_layers:
        raise ConfigError(
            f"student layers must be increasing indices in [0, {num_layers - 1}] without repeats (got {items})"
        )
    return items


def layer_student(teacher: str | os.PathLike[str], layers: str, output: str | os.PathLike[str]) -> Path:
    """Write a student that keeps some of the teacher's layers (embeddings and head included); return its folder.

    ``teacher`` is a Hugging Face folder or a built-in (converted to fp32 first).

    Raises:
        ConfigError: the layer spec is wrong, or the teacher is not a BERT-like encoder with
            ``encoder.layer``.
    """
    torch = require("torch", feature="distillation")
    require("transformers", feature="distillation")

    out = Path(output)
    folder = _teacher_folder(teacher, out)
    from crossrank.models.hf import load_classifier

    model = load_classifier(folder, dtype=torch.float32)
    base = getattr(model, model.base_model_prefix, None)
    stack = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or stack is None:
        raise ConfigError(f"{teacher!r} is not a BERT-like encoder (no encoder.layer); start from a smaller encoder")
    keep = parse_layers(layers, len(stack))
    base.encoder.layer = torch.nn.ModuleList([stack[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    _save_student(model, folder, out)
    log.info("student with layers %s of %s written to %s", keep, teacher, out)
    return out


def parse_prune(spec: str, *, heads: int, ffn: int) -> tuple[int, int]:
    """Return ``(heads, ffn)`` kept per layer for ``"prune:heads=6,ffn=768"`` (either may be left out).

    ``heads`` and ``ffn`` are the teacher's own counts, the defaults and the upper bounds.

    Raises:
        ConfigError: the spec is malformed or asks for more than the teacher has.
    """
    body = spec.split(":", 1)[1] if spec.startswith("prune:") else spec
    keep = {"heads": heads, "ffn": ffn}
    for item in filter(None, body.replace(" ", "").split(",")):
        key, _, value = item.partition("=")
        if key not in keep or not value.isdigit():
            raise ConfigError(f"student pruning must look like 'prune:heads=6,ffn=768' (got {spec!r})")
        keep[key] = int(value)
    if not 1 <= keep["heads"] <= heads or not 1 <= keep["ffn"] <= ffn:
        raise ConfigError(
            f"the teacher has {heads} heads and {ffn} feed-forward neurons per layer; "
            f"cannot keep {keep['heads']} and {keep['ffn']} ({spec!r})"
        )
    return keep["heads"], keep["ffn"]


def _teacher_folder(teacher: str | os.PathLike[str], out: Path) -> Path:
    """Return a Hugging Face folder with the teacher's weights (a built-in is converted to fp32 once)."""
    from crossrank.models.registry import lookup
    from crossrank.models.source import resolve

    files = resolve(teacher)
    if files.has_weights:
        return Path(files.folder)
    builtin = lookup(files.builtin) if files.builtin else None
    if builtin is None:
        raise ConfigError(f"{teacher!r} has no trainable weights to build a student from")
    from crossrank.models.convert import convert_builtin

    folder = out.with_name(out.name + "-teacher-fp32")
    if not (folder / "model.safetensors").is_file():
        convert_builtin(builtin.name, folder, overwrite=True)
    return folder


def _save_student(model: Any, folder: Path, out: Path) -> Path:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (folder / name).is_file():
            shutil.copy2(folder / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def pruned_student(
    teacher: str | os.PathLike[str],
    spec: str,
    groups: Sequence[Group],
    output: str | os.PathLike[str],
    *,
    max_groups: int = 128,
    max_length: int = 256,
    seed: int = 13,
) -> Path:
    """Write a student that keeps, in every layer, the teacher's most important heads and FFN neurons.

    Importance is first-order (Taylor): on up to ``max_groups`` of the distillation groups (seeded
    sample), how much the spread of the teacher's scores within a group, ``sum((s - mean(s))**2)``,
    changes when a head's output or a feed-forward neuron's activation is scaled (absolute values
    summed over groups; for neurons also over tokens). Heads are removed by
    :func:`crossrank.models.hf.prune_heads`, so the student loads on transformers 4 and 5 alike.
    All layers are kept, so the student keeps the teacher's depth
    and residual stream; a layer with 6 of 12 heads and half its FFN neurons costs about half.
    The pairs are encoded by the same :class:`~crossrank.models.encoding.PairEncoder` as
    training and inference. The importances are saved in ``prune.json`` beside the weights.

    Raises:
        ConfigError: the spec is wrong, or the teacher is not a BERT-like encoder.
        InputError: there are no groups to measure importance on.
    """
    import json

    torch = require("torch", feature="distillation")
    require("transformers", feature="distillation")
    from crossrank.models.encoding import PairEncoder

    out = Path(output)
    folder = _teacher_folder(teacher, out)
    from crossrank.models.hf import load_classifier
    from crossrank.models.hf import prune_heads as remove_heads

    model = load_classifier(folder, dtype=torch.float32, attn_implementation="eager").eval()
    base = getattr(model, model.base_model_prefix, None)
    stack = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or stack is None or not hasattr(stack[0], "intermediate"):
        raise ConfigError(f"{teacher!r} is not a BERT-like encoder (no encoder.layer[i].intermediate); cannot prune it")
    n_layers, n_heads = len(stack), int(model.config.num_attention_heads)
    width = int(model.config.intermediate_size)
    keep_heads, keep_ffn = parse_prune(spec, heads=n_heads, ffn=width)
    if not groups:
        raise InputError("no distillation groups to measure head and neuron importance on")
    rng = np.random.default_rng(seed)
    sample = [groups[i] for i in sorted(rng.permutation(len(groups))[:max_groups].tolist())]
    encoder = PairEncoder(folder / "tokenizer.json", max_length=min(max_length, model.config.max_position_embeddings))
    head_score = torch.zeros(n_layers, n_heads)
    ffn_score = torch.zeros(n_layers, width)
    acts: dict[int, Any] = {}

    def keep_activation(i: int) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            output.retain_grad()
            acts[i] = output

        return hook

    contexts: dict[int, Any] = {}

    def keep_context(i: int) -> Callable[..., None]:
        def hook(_module: Any, inputs: Any) -> None:
            inputs[0].retain_grad()
            contexts[i] = inputs[0]

        return hook

    hooks = [layer.intermediate.register_forward_hook(keep_activation(i)) for i, layer in enumerate(stack)]
    hooks += [layer.attention.output.dense.register_forward_pre_hook(keep_context(i)) for i, layer in enumerate(stack)]
    size = int(model.config.hidden_size) // n_heads
    try:
        for g in sample:
            enc = encoder.encode([g.query] * len(g.documents), list(g.documents))
            batch = {
                "input_ids": torch.from_numpy(enc.input_ids),
                "attention_mask": torch.from_numpy(enc.attention_mask),
                "token_type_ids": torch.from_numpy(enc.token_type_ids),
            }
            s = model(**batch).logits[:, 0]
            (s - s.mean().detach()).pow(2).sum().backward()
            tokens = batch["attention_mask"].unsqueeze(-1).float()
            for i in range(n_layers):
                ffn_score[i] += ((acts[i] * acts[i].grad).abs() * tokens).sum((0, 1)).detach()
                # a head's output scaled by m: d loss / d m = sum of its output times the gradient
                ctx = contexts[i]
                per_head = (ctx * ctx.grad * tokens).sum((0, 1)).view(n_heads, size).sum(1)
                head_score[i] += per_head.abs().detach()
            model.zero_grad(set_to_none=True)
            acts.clear()
            contexts.clear()
    finally:
        for h in hooks:
            h.remove()
    if keep_heads < n_heads:
        remove_heads(model, {i: torch.argsort(head_score[i])[: n_heads - keep_heads].tolist() for i in range(n_layers)})
    if keep_ffn < width:
        for i, layer in enumerate(stack):
            idx = torch.sort(torch.argsort(ffn_score[i], descending=True)[:keep_ffn]).values
            up, down = layer.intermediate.dense, layer.output.dense
            new_up = torch.nn.Linear(up.in_features, keep_ffn)
            new_down = torch.nn.Linear(keep_ffn, down.out_features)
            with torch.no_grad():
                new_up.weight.copy_(up.weight[idx])
                new_up.bias.copy_(up.bias[idx])
                new_down.weight.copy_(down.weight[:, idx])
                new_down.bias.copy_(down.bias)
            layer.intermediate.dense, layer.output.dense = new_up, new_down
        model.config.intermediate_size = keep_ffn
    _save_student(model, folder, out)
    (out / "prune.json").write_text(
        json.dumps(
            {
                "teacher": str(teacher),
                "heads_kept": keep_heads,
                "ffn_kept": keep_ffn,
                "groups_measured": len(sample),
                "head_importance": head_score.tolist(),
                "ffn_importance_sum": ffn_score.sum(1).tolist(),
            }
        )
        + "\n",
        encoding="utf-8",
    )
    log.info(
        "student with %d heads and %d FFN neurons per layer of %s written to %s", keep_heads, keep_ffn, teacher, out
    )
    return out


def source_candidates(
    source: Source, *, seed: int = 13
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Return ``(queries, candidates, documents)`` of a source: texts, candidate ids best first, records.

    Raises:
        InputError: the folder is not BEIR, or no query of the split has candidates.
    """
    from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, run_top_ids

    root = Path(source.data)
    pooled = bool(source.pool and source.pool_depth)
    if not (root / "queries.jsonl").is_file():
        how = f"; create it with: {source.prepare}" if source.prepare else ""
        raise InputError(f"distillation source {root} has no queries.jsonl{how}")
    own_corpus = (root / "corpus.jsonl").is_file()
    if not own_corpus and (source.run is not None or not pooled):
        raise InputError(
            f"distillation source {root} is not a BEIR folder: corpus.jsonl is missing "
            "(a folder of queries alone needs a pool and pool_depth, and no run)"
        )
    queries = read_beir_queries(root / "queries.jsonl")
    if source.split is not None:
        qrels_path = root / "qrels" / f"{source.split}.tsv"
        if not qrels_path.is_file():
            raise InputError(f"distillation source {root} has no split {source.split!r} ({qrels_path} is missing)")
        judged = set(read_qrels(qrels_path))
        queries = {q: t for q, t in queries.items() if q in judged}
    if source.max_queries is not None and len(queries) > source.max_queries:
        ids = sorted(queries)
        pick = np.random.default_rng(seed).permutation(len(ids))[: source.max_queries]
        queries = {ids[i]: queries[ids[i]] for i in sorted(pick.tolist())}
    corpus = read_beir_corpus(root / "corpus.jsonl") if own_corpus else {}
    candidates: dict[str, list[str]]
    if not own_corpus:
        candidates = {}
    elif source.run is not None:
        run_path = Path(source.run) if Path(source.run).is_absolute() else root / source.run
        candidates = run_top_ids(run_path, source.depth, queries=queries, corpus=corpus)
    else:
        candidates = corpus_candidates(root / "corpus.jsonl", queries, depth=source.depth, retriever=source.retriever)
    documents: dict[str, dict[str, Any]] = {d: corpus[d] for ids in candidates.values() for d in ids}
    if pooled:
        pool = Path(str(source.pool))
        pool_file = pool / "corpus.jsonl" if pool.is_dir() else pool
        extra = corpus_candidates(pool_file, queries, depth=source.pool_depth, retriever=source.retriever)
        pool_corpus = read_beir_corpus(pool_file)
        for q, ids in extra.items():
            seen = set(candidates.get(q, []))
            for d in ids:
                key = f"pool:{d}"
                if key not in seen:
                    candidates.setdefault(q, []).append(key)
                    documents[key] = pool_corpus[d]
    candidates = {q: v for q, v in candidates.items() if v}
    if not candidates:
        raise InputError(f"distillation source {root}: no query has candidates; check the run and the split")
    return {q: queries[q] for q in candidates}, candidates, documents


def distill_groups(
    teacher: Any,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, Mapping[str, Any]],
    *,
    group_size: int = 8,
    groups_per_query: int = 2,
    seed: int = 13,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Group], int]:
    """Return distillation groups scored by ``teacher`` (a :class:`~crossrank.CrossEncoder`), and the pairs scored.

    Each group is the teacher's best candidate first (Margin-MSE reads it as the positive), then
    ``group_size - 1`` others: half sampled from the teacher's next ``2 * group_size`` (hard),
    the rest from the remaining candidates. Labels are placeholders (1 for the first, else 0).

    Raises:
        InputError: a query has fewer than two candidates with text, so no group can be made.
    """
    if group_size < 2:
        raise ConfigError(f"group_size must be >= 2 (got {group_size})")
    keys = [(q, d) for q in sorted(candidates) for d in candidates[q] if d in documents]
    texts = {d: doc_text(documents[d]) for _, d in keys}
    pairs = [(queries[q], texts[d]) for q, d in keys]
    scores = np.empty(len(pairs), dtype=np.float64)
    step = 2048
    for start in range(0, len(pairs), step):
        scores[start : start + step] = np.asarray(
            teacher.score(pairs[start : start + step], activation="none"), dtype=np.float64
        ).reshape(-1)
        if progress is not None:
            progress(len(pairs[start : start + step]))
    by_query: dict[str, list[tuple[str, float]]] = {}
    for (q, d), s in zip(keys, scores.tolist(), strict=True):
        by_query.setdefault(q, []).append((d, s))
    rng = np.random.default_rng(seed)
    groups: list[Group] = []
    for q in sorted(by_query):
        ranked = sorted(by_query[q], key=lambda t: -t[1])
        if len(ranked) < 2:
            continue
        size = min(group_size, len(ranked))
        for _ in range(groups_per_query):
            rest = ranked[1:]
            hard_pool = rest[: 2 * group_size]
            n_hard = min(len(hard_pool), (size - 1 + 1) // 2)
            hard_idx = rng.permutation(len(hard_pool))[:n_hard].tolist()
            chosen = [hard_pool[i] for i in hard_idx]
            taken = {d for d, _ in chosen}
            remaining = [t for t in rest if t[0] not in taken]
            more = rng.permutation(len(remaining))[: size - 1 - len(chosen)].tolist()
            chosen += [remaining[i] for i in more]
            docs = [ranked[0], *chosen]
            groups.append(
                Group(
                    query=queries[q],
                    documents=tuple(texts[d] for d, _ in docs),
                    labels=(1.0, *([0.0] * (len(docs) - 1))),
                    teacher=tuple(s for _, s in docs),
                    query_id=q,
                    doc_ids=tuple(d for d, _ in docs),
                )
            )
    if not groups:
        raise InputError("no distillation group could be made: every query has fewer than two candidates with text")
    return groups, len(pairs)


@dataclass(slots=True)
class Recipe:
    """A whole distillation: teacher, student, sources, training settings, dev set and export.

    Read from TOML by :func:`load_recipe` (paths relative to the file)::

        teacher = "default"                 # any crossrank model source
        student = "layers:0,2,4,6,8,10"     # teacher layers, "prune:heads=6,ffn=768", or a folder / checkpoint
        output = "runs/fast"
        group_size = 8
        groups_per_query = 2
        export = "int8"                     # int8 (kept only if dev quality holds), bf16, none, skip

        [train]                             # crossrank.train.TrainConfig fields
        loss = "kl"
        epochs = 1

        [dev]                               # optional: picks the best checkpoint
        data = "../shared/data/trec-dl-2021-passage"
        split = "test"
        run = "runs/bm25.top100.trec"
        depth = 30
        measure = "nDCG@10"
        rel = 2

        [[source]]                          # crossrank.train.distill.Source fields
        data = "../shared/data/wikiqa"
        split = "train"
        run = "runs/train.candidates.trec"
    """

    teacher: str = "default"
    student: str = "layers:6"
    output: str = "distilled"
    sources: list[Source] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    dev: dict[str, Any] | None = None
    group_size: int = 8
    groups_per_query: int = 2
    seed: int = 13
    export: str = "int8"


_RECIPE_KEYS = {
    "teacher",
    "student",
    "output",
    "source",
    "train",
    "dev",
    "group_size",
    "groups_per_query",
    "seed",
    "export",
}
_DEV_KEYS = {"data", "split", "run", "depth", "measure", "rel", "max_queries"}


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Return the recipe in a TOML file; relative paths are resolved against the file's folder.

    Raises:
        InputError: the file is unreadable, not TOML, or has unknown keys or no source.
    """
    from crossrank.io import read_toml

    p = Path(path)
    raw = read_toml(p, what="recipe", allowed=_RECIPE_KEYS)
    base = p.parent

    def rel(value: str | None) -> str | None:
        if value is None or value.startswith(("layers:", "prune:")):
            return value
        q = Path(value)
        return str(q if q.is_absolute() else base / q)

    sources = []
    for i, s in enumerate(raw.get("source", [])):
        try:
            split = s.get("split", "train")
            fields = {**s, "data": rel(s["data"]), "pool": rel(s.get("pool"))}
            fields["split"] = None if split == "all" else split
            sources.append(Source(**fields))
        except (TypeError, KeyError) as err:
            raise InputError(
                f"{p}: [[source]] number {i + 1} is wrong ({err}); fields: {sorted(Source.__slots__)}"
            ) from err
    if not sources:
        raise InputError(f"{p}: no [[source]]: a distillation needs training queries")
    dev = raw.get("dev")
    if dev is not None:
        bad = sorted(set(dev) - _DEV_KEYS)
        if bad or "data" not in dev:
            raise InputError(f"{p}: [dev] needs data and allows {sorted(_DEV_KEYS)} (unknown: {bad})")
        dev = {**dev, "data": rel(dev["data"])}
    teacher = str(raw.get("teacher", "default"))
    student = str(raw.get("student", "layers:6"))
    local = (base / student).exists() and not student.startswith(("layers:", "prune:"))
    return Recipe(
        teacher=str(rel(teacher)) if (base / teacher).exists() else teacher,
        student=str(rel(student)) if local else student,
        output=str(rel(str(raw.get("output", "distilled")))),
        sources=sources,
        train=dict(raw.get("train", {})),
        dev=dev,
        group_size=int(raw.get("group_size", 8)),
        groups_per_query=int(raw.get("groups_per_query", 2)),
        seed=int(raw.get("seed", 13)),
        export=str(raw.get("export", "int8")),
    )


def load_dev(spec: Mapping[str, Any], *, seed: int = 13) -> Any:
    """Return a :class:`~crossrank.train.trainer.DevSet` from a ``[dev]`` table (data, split, run, depth, ...)."""
    from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, run_top_ids
    from crossrank.train.trainer import DevSet

    root = Path(spec["data"])
    split = spec.get("split", "dev")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    queries = {q: t for q, t in read_beir_queries(root / "queries.jsonl").items() if q in qrels}
    if spec.get("max_queries") and len(queries) > int(spec["max_queries"]):
        ids = sorted(queries)
        pick = np.random.default_rng(seed).permutation(len(ids))[: int(spec["max_queries"])]
        queries = {ids[i]: queries[ids[i]] for i in sorted(pick.tolist())}
    corpus = read_beir_corpus(root / "corpus.jsonl")
    depth = int(spec.get("depth", 100))
    if spec.get("run"):
        run_path = Path(spec["run"]) if Path(spec["run"]).is_absolute() else root / spec["run"]
        candidates = run_top_ids(run_path, depth, queries=queries, corpus=corpus)
    else:
        candidates = corpus_candidates(root / "corpus.jsonl", queries, depth=depth)
    documents = {d: doc_text(corpus[d]) for ids in candidates.values() for d in ids}
    return DevSet(
        queries=queries,
        documents=documents,
        candidates=candidates,
        qrels={q: qrels[q] for q in queries},
        measure=str(spec.get("measure", "nDCG@10")),
        rel=spec.get("rel"),
    )


def run_recipe(recipe: Recipe, *, progress: bool = False, resume: bool = True) -> dict[str, Any]:
    """Run a whole distillation; return a summary (data, training, export) also saved as ``summary.json``."""
    import json

    from crossrank.rerank.config import ScoringConfig
    from crossrank.rerank.cross_encoder import CrossEncoder
    from crossrank.train.trainer import TrainConfig, train

    out = Path(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(**{"loss": "kl", "seed": recipe.seed, **recipe.train})
    from crossrank.train.losses import needs_teacher

    if not needs_teacher(cfg.loss):
        raise ConfigError(f"distillation trains with loss kl or margin-mse (got {cfg.loss!r})")
    teacher = CrossEncoder(
        recipe.teacher, config=ScoringConfig(activation="none", cache_dir=str(out / "teacher-cache")), calibration=None
    )
    report = DistillReport()
    groups: list[Group] = []
    for src in recipe.sources:
        queries, candidates, documents = source_candidates(src, seed=recipe.seed)
        total = sum(len(v) for v in candidates.values())
        with counting(progress, f"teacher scores {Path(src.data).name}", total) as tick:
            g, n = distill_groups(
                teacher,
                queries,
                candidates,
                documents,
                group_size=recipe.group_size,
                groups_per_query=src.groups_per_query or recipe.groups_per_query,
                seed=recipe.seed,
                progress=tick,
            )
        groups += g
        report.sources.append(
            {"data": src.data, "split": src.split, "queries": len(queries), "pairs": n, "groups": len(g)}
        )
        report.pairs += n
    report.groups = len(groups)
    student = recipe.student
    if student.startswith("layers:"):
        student = str(layer_student(recipe.teacher, student, out / "student-init"))
    elif student.startswith("prune:"):
        max_length = int(recipe.train.get("max_length", 256))
        student = str(
            pruned_student(
                recipe.teacher, student, groups, out / "student-init", max_length=max_length, seed=recipe.seed
            )
        )
    dev = load_dev(recipe.dev, seed=recipe.seed) if recipe.dev else None
    result = train(student, groups, out / "train", config=cfg, dev=dev, resume=resume, progress=progress)
    summary: dict[str, Any] = {
        "teacher": recipe.teacher,
        "student": recipe.student,
        "data": {"sources": report.sources, "pairs": report.pairs, "groups": report.groups},
        "train": {"config": cfg.to_dict(), **{k: v for k, v in result.summary().items() if k != "model"}},
        "model": str(result.model),
    }
    if recipe.export != "skip":
        from crossrank.train.finish import export_trained

        summary["export"] = export_trained(result.model, out / "onnx", quantize=recipe.export, dev=dev)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
