"""Training data for cross-encoders: labelled pairs, triples, and groups mined from a first stage.

Everything becomes a :class:`Group`: one query with one or more documents, their labels, and
(for distillation) the teacher's scores. Pairs are groups of one; a triple is a group of two
(positive first); mined groups hold a positive and ``n`` negatives from a first stage.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank._text import plural
from crossrank.documents import record_text
from crossrank.errors import InputError
from crossrank.io import beir_qrels_path, read_beir_corpus, read_beir_queries, read_jsonl, read_qrels, run_top_ids

if TYPE_CHECKING:
    from crossrank.rerank.cross_encoder import CrossEncoder
    from crossrank.retrieve.index import Index

__all__ = [
    "Group",
    "MiningReport",
    "MiningSettings",
    "corpus_candidates",
    "doc_text",
    "first_stage_candidates",
    "load_beir",
    "mine_groups",
    "read_pairs",
    "read_triples",
]

log = logging.getLogger(__name__)

_QUERY_KEYS = ("query", "sentence1", "question")
_DOC_KEYS = ("document", "text", "passage", "sentence2", "answer")
_LABEL_KEYS = ("label", "score")


@dataclass(frozen=True, slots=True)
class Group:
    """One query with the documents it is trained on.

    Attributes:
        query: the query text.
        documents: document texts; for listwise and distillation losses the positive is first.
        labels: one label per document (1/0, a grade, or a score in [0, 1] for ``bce``).
        teacher: the teacher's score per document, for distillation losses.
        query_id: the query's id, when known.
        doc_ids: the documents' ids, when known.
    """

    query: str
    documents: tuple[str, ...]
    labels: tuple[float, ...]
    teacher: tuple[float, ...] | None = None
    query_id: str = ""
    doc_ids: tuple[str, ...] = ()


def doc_text(record: Mapping[str, Any]) -> str:
    """Return the text a cross-encoder reads for a BEIR record: title and text, as at inference."""
    return record_text(record)


def _pick(rec: Mapping[str, Any], keys: Sequence[str], what: str, where: str) -> Any:
    for k in keys:
        if k in rec:
            return rec[k]
    raise InputError(f"{where} has no {what} field (looked for {', '.join(keys)}; got {sorted(rec)})")


def read_pairs(path: str | Path, *, label_scale: float = 1.0) -> list[Group]:
    """Return labelled pairs from JSONL rows ``{"query", "document", "label"}`` as groups of one.

    Also accepted: ``sentence1``/``sentence2``/``score`` (STS-style) and ``question``/``answer``.
    ``label_scale`` divides each label (e.g. 5 for STS-B's 0-5 scores, to get [0, 1]).

    Raises:
        InputError: a row lacks a field, a text is empty, or a label is not a number.
    """
    out = []
    for i, rec in enumerate(read_jsonl(path), start=1):
        where = f"{path}:{i}"
        q = _pick(rec, _QUERY_KEYS, "query", where)
        d = _pick(rec, _DOC_KEYS, "document", where)
        label = _pick(rec, _LABEL_KEYS, "label", where)
        if not isinstance(q, str) or not q.strip() or not isinstance(d, str) or not d.strip():
            raise InputError(f"{where}: the query and the document must be non-empty strings")
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise InputError(f"{where}: the label must be a number (got {label!r})")
        out.append(Group(q, (d,), (float(label) / label_scale,)))
    return out


def read_triples(path: str | Path) -> list[Group]:
    """Return triples from JSONL rows ``{"query", "positive", "negative"}`` as groups (positive first).

    Raises:
        InputError: a row lacks a field or a text is empty.
    """
    out = []
    for i, rec in enumerate(read_jsonl(path), start=1):
        where = f"{path}:{i}"
        try:
            q, pos, neg = rec["query"], rec["positive"], rec["negative"]
        except KeyError as err:
            raise InputError(f"{where}: a triple needs 'query', 'positive' and 'negative' (missing {err})") from err
        if not all(isinstance(t, str) and t.strip() for t in (q, pos, neg)):
            raise InputError(f"{where}: query, positive and negative must be non-empty strings")
        ids = (str(rec.get("positive_id", "")), str(rec.get("negative_id", "")))
        out.append(Group(q, (pos, neg), (1.0, 0.0), query_id=str(rec.get("query_id", "")), doc_ids=ids))
    return out


@dataclass(frozen=True, slots=True)
class MiningSettings:
    """How negatives are mined from a first stage's candidates.

    Attributes:
        negatives: hard negatives per group.
        depth: first-stage candidates looked at per query.
        skip_top: candidates at the top of the list never used as negatives (they are often
            unjudged relevant documents).
        rank_range: sample negatives from first-stage ranks ``[low, high)`` (1-based), or ``None``
            for every rank after ``skip_top``.
        random_negatives: of the ``negatives``, how many are drawn at random from the whole corpus.
        rel: grade from which a judged document is a positive.
        groups_per_query: groups made per query (each with its own positive when there are several).
        teacher_margin: with a teacher, drop a negative whose teacher score is within this margin of
            (or above) the positive's: probably an unjudged relevant document.
        seed: random seed.
    """

    negatives: int = 7
    depth: int = 100
    skip_top: int = 0
    rank_range: tuple[int, int] | None = None
    random_negatives: int = 0
    rel: int = 1
    groups_per_query: int = 1
    teacher_margin: float | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise InputError(f"negatives must be >= 1 (got {self.negatives})")
        if not 0 <= self.random_negatives <= self.negatives:
            raise InputError(
                f"random_negatives must be in [0, negatives={self.negatives}] (got {self.random_negatives})"
            )
        if self.rank_range is not None and not 1 <= self.rank_range[0] < self.rank_range[1]:
            raise InputError(f"rank_range must be (low, high) with 1 <= low < high (got {self.rank_range})")
        if self.skip_top < 0 or self.depth < 1:
            raise InputError(f"skip_top must be >= 0 and depth >= 1 (got {self.skip_top}, {self.depth})")


@dataclass(slots=True)
class MiningReport:
    """What mining used and left out."""

    queries: int = 0
    groups: int = 0
    no_positive: int = 0
    no_candidates: int = 0
    too_few_negatives: int = 0
    dropped_by_teacher: int = 0
    missing_ids: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """Return one line per thing that was left out."""
        out = []
        if self.no_positive:
            one = self.no_positive == 1
            out.append(
                f"{plural(self.no_positive, 'query')} {'has' if one else 'have'} no judged positive and "
                f"{'was' if one else 'were'} skipped"
            )
        if self.no_candidates:
            one = self.no_candidates == 1
            out.append(
                f"{plural(self.no_candidates, 'query')} {'has' if one else 'have'} no first-stage candidates and "
                f"{'was' if one else 'were'} skipped"
            )
        if self.too_few_negatives:
            out.append(
                f"{plural(self.too_few_negatives, 'group')} {'was' if self.too_few_negatives == 1 else 'were'} "
                "filled with random negatives (too few candidates)"
            )
        if self.dropped_by_teacher:
            out.append(f"{self.dropped_by_teacher} likely false negatives dropped by the teacher margin")
        return out


def load_beir(
    data: str | Path, split: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    """Return the corpus, queries and ``split`` qrels of a data folder.

    The judgments are found as every ``--data`` command finds them (:func:`crossrank.io.beir_qrels_path`):
    ``qrels/<split>.tsv``, else a single-split ``qrels.tsv``.

    Raises:
        InputError: a file is missing or the qrels are empty.
    """
    root = Path(data)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise InputError(f"{root} is not a BEIR folder: {name} is missing")
    qrels_path = beir_qrels_path(root, split)
    qrels = read_qrels(qrels_path)
    if not qrels:
        raise InputError(f"{qrels_path} holds no judgments; the training set would be empty")
    return read_beir_corpus(root / "corpus.jsonl"), read_beir_queries(root / "queries.jsonl"), qrels


def first_stage_candidates(
    source: str | Path | Mapping[str, Sequence[str]] | Index,
    queries: Mapping[str, str],
    *,
    depth: int,
    retriever: str | None = None,
) -> dict[str, list[str]]:
    """Return each query's first-stage candidate ids, best first.

    ``source`` is a TREC run file, an index (or its folder; searched with ``retriever``), or ready lists.
    """
    from crossrank.pipeline import Pipeline
    from crossrank.retrieve.index import Index

    if isinstance(source, Mapping):
        return {q: list(v)[:depth] for q, v in source.items()}
    if not isinstance(source, Index) and Path(source).is_file():
        return run_top_ids(Path(source), depth)
    pipe = Pipeline(source, reranker=None)
    results = pipe.search_many(dict(queries), k=depth, depth=depth, retriever=retriever, rerank=False)  # type: ignore[arg-type]
    return {str(r.query_id): r.doc_ids() for r in results}


def corpus_candidates(
    corpus_file: str | Path, queries: Mapping[str, str], *, depth: int, retriever: str = "bm25"
) -> dict[str, list[str]]:
    """Return each query's top ``depth`` document ids in a corpus, searched through a temporary index.

    ``retriever`` is ``"bm25"``, ``"dense"`` (the default bi-encoder) or ``"hybrid"``.
    """
    from crossrank.retrieve.index import Index

    with tempfile.TemporaryDirectory(prefix="crossrank-candidates-") as tmp:
        index = Index.build(Path(tmp) / retriever, corpus_file, retriever=retriever)
        try:
            return first_stage_candidates(index, queries, depth=depth, retriever=retriever)
        finally:
            index.close()


def mine_groups(
    corpus: Mapping[str, Mapping[str, Any]],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Mapping[str, Sequence[str]],
    *,
    settings: MiningSettings | None = None,
    teacher: CrossEncoder | None = None,
    report: MiningReport | None = None,
) -> list[Group]:
    """Return training groups: a judged positive, then hard negatives from the first stage.

    Negatives are candidates not judged relevant, outside the ``skip_top`` and within
    ``rank_range``, sampled at random (seeded), plus ``random_negatives`` from the whole corpus.
    With a teacher, every document gets the teacher's score (for distillation losses), and
    negatives that the teacher scores within ``teacher_margin`` of the positive are dropped.

    Raises:
        InputError: judged or candidate ids are missing from the corpus, or no group could be made.
    """
    s = settings or MiningSettings()
    rep = report if report is not None else MiningReport()
    rng = np.random.default_rng(s.seed)
    judged_ids = {d for docs in qrels.values() for d, g in docs.items() if g >= s.rel}
    missing = sorted(judged_ids - set(corpus))
    cand_missing = sorted({d for q in qrels for d in candidates.get(q, ())[: s.depth]} - set(corpus))
    if missing or cand_missing:
        rep.missing_ids = (missing + cand_missing)[:10]
        raise InputError(
            f"{len(missing)} judged positives and {len(cand_missing)} first-stage candidates are not in the corpus "
            f"(e.g. {', '.join(rep.missing_ids[:5])}); check that the qrels, the run and the corpus belong together"
        )
    all_ids = list(corpus)
    groups_raw: list[tuple[str, str, list[str]]] = []
    for q in sorted(qrels):
        if q not in queries:
            continue
        positives = [d for d, g in sorted(qrels[q].items(), key=lambda t: (-t[1], t[0])) if g >= s.rel]
        if not positives:
            rep.no_positive += 1
            continue
        cands = list(candidates.get(q, ()))[: s.depth]
        if not cands and not s.random_negatives:
            rep.no_candidates += 1
            continue
        relevant = {d for d, g in qrels[q].items() if g >= s.rel}
        low, high = s.rank_range if s.rank_range else (s.skip_top + 1, s.depth + 1)
        low = max(low, s.skip_top + 1)
        pool = [d for r, d in enumerate(cands, start=1) if low <= r < high and d not in relevant]
        rep.queries += 1
        picks = rng.permutation(len(positives))[: s.groups_per_query]
        for pi in picks.tolist():
            hard = s.negatives - s.random_negatives
            chosen = [pool[i] for i in rng.permutation(len(pool))[:hard].tolist()] if pool else []
            want = s.negatives - len(chosen)
            if want > s.random_negatives:
                rep.too_few_negatives += 1
            taken = set(chosen) | relevant
            tries = 0
            while want > 0 and tries < 50 * s.negatives:
                d = all_ids[int(rng.integers(len(all_ids)))]
                tries += 1
                if d not in taken:
                    chosen.append(d)
                    taken.add(d)
                    want -= 1
            groups_raw.append((q, positives[pi], chosen))
    if not groups_raw:
        raise InputError(
            "no training group could be made: no query has both a judged positive and negatives; "
            + "; ".join(rep.notes())
        )
    texts = {d: doc_text(corpus[d]) for _, p, negs in groups_raw for d in (p, *negs)}
    teacher_scores: dict[tuple[str, str], float] = {}
    if teacher is not None:
        pairs = sorted({(q, d) for q, p, negs in groups_raw for d in (p, *negs)})
        scores = teacher.score([(queries[q], texts[d]) for q, d in pairs], activation="none")
        teacher_scores = dict(
            zip(pairs, np.asarray(scores, dtype=np.float64).reshape(len(pairs)).tolist(), strict=True)
        )
    out = []
    for q, p, negs in groups_raw:
        teach = None
        if teacher is not None:
            if s.teacher_margin is not None:
                keep = [d for d in negs if teacher_scores[(q, d)] < teacher_scores[(q, p)] - s.teacher_margin]
                rep.dropped_by_teacher += len(negs) - len(keep)
                negs = keep
                if not negs:
                    continue
            teach = tuple(teacher_scores[(q, d)] for d in (p, *negs))
        docs = (p, *negs)
        out.append(
            Group(
                query=queries[q],
                documents=tuple(texts[d] for d in docs),
                labels=(1.0, *([0.0] * len(negs))),
                teacher=teach,
                query_id=q,
                doc_ids=docs,
            )
        )
    rep.groups = len(out)
    return out


def check_groups(groups: Iterable[Group], *, loss: str) -> list[Group]:
    """Return the groups as a list after checking they suit ``loss``, before any training time is spent.

    Raises:
        InputError: no groups; labels outside [0, 1] for ``bce``; a group of one for a group loss;
            teacher scores missing for a distillation loss.
    """
    from crossrank.train.losses import LOSSES, needs_teacher

    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    out = list(groups)
    if not out:
        raise InputError("the training set is empty: no pairs, triples or groups were read")
    labels = np.asarray([x for g in out for x in g.labels], dtype=np.float64)
    if not np.isfinite(labels).all():
        raise InputError("a label is NaN or infinite; fix the training data")
    if loss == "bce" and (labels.min() < 0 or labels.max() > 1):
        bad = labels[(labels < 0) | (labels > 1)][0]
        raise InputError(
            f"loss 'bce' needs labels in [0, 1] (found {bad:g}); rescale them (--label-scale, e.g. 5 for 0-5 "
            "scores) or use a ranking loss (ranknet, margin)"
        )
    if loss in ("listwise", "ranknet", "margin", "margin-mse", "kl") and min(len(g.documents) for g in out) < 2:
        raise InputError(
            f"loss {loss!r} compares documents of the same query, but some groups hold one document; "
            "train on triples or mined groups, or use loss 'bce' for labelled pairs"
        )
    if needs_teacher(loss) and any(g.teacher is None for g in out):
        raise InputError(
            f"loss {loss!r} learns from teacher scores; mine the groups with a teacher (crossrank distill)"
        )
    if loss in ("ranknet", "margin") and all(len(set(g.labels)) < 2 for g in out):
        raise InputError(f"loss {loss!r} needs documents with different labels within a group")
    return out
