"""Retrieval metrics through ir-measures (trec_eval's numbers), with checked runs and qrels."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrank._deps import require
from crossrank._text import plural
from crossrank.errors import InputError
from crossrank.io import iter_trec_run

__all__ = ["DEFAULT_MEASURES", "Evaluation", "RunCheck", "evaluate", "read_run_checked"]

#: what ``crossrank eval`` reports when no measures are named
DEFAULT_MEASURES = "nDCG@10 RR@10 R@100 AP P@10"
#: measures whose value counts documents as relevant or not (a binary cut-off applies to them)
_BINARY = ("RR", "R", "AP", "P", "Success", "Rprec", "Bpref", "NumRel", "NumRelRet")


@dataclass(slots=True)
class RunCheck:
    """What reading one run found, so nothing changes a metric silently.

    Attributes:
        path: the run file.
        queries: queries in the run.
        entries: (query, document) entries kept.
        duplicates: entries that repeated a (query, document) already seen (kept: the first).
        unjudged_queries: run queries without judgments (trec_eval ignores them too).
        missing_queries: judged queries the run has no entry for (they score 0 when ``missing="zero"``).
    """

    path: str
    queries: int = 0
    entries: int = 0
    duplicates: int = 0
    unjudged_queries: list[str] = field(default_factory=list)
    missing_queries: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """Return one line per thing that was skipped or filled in."""
        out = []
        if self.duplicates:
            what = plural(self.duplicates, "duplicate (query, document) entry", "duplicate (query, document) entries")
            out.append(f"{self.path}: {what} skipped (first kept)")
        if self.unjudged_queries:
            ex = ", ".join(self.unjudged_queries[:3])
            n = len(self.unjudged_queries)
            out.append(
                f"{self.path}: {plural(n, 'query')} {'has' if n == 1 else 'have'} no judgments and "
                f"{'is' if n == 1 else 'are'} not scored ({ex})"
            )
        if self.missing_queries:
            ex = ", ".join(self.missing_queries[:3])
            n = len(self.missing_queries)
            out.append(f"{self.path}: {plural(n, 'judged query')} {'has' if n == 1 else 'have'} no results ({ex})")
        return out


def read_run_checked(
    path: str | Path, *, duplicates: Literal["error", "skip"] = "error"
) -> tuple[dict[str, dict[str, float]], RunCheck]:
    """Return a TREC run as ``{query: {doc: score}}`` and what was found while reading it.

    Raises:
        InputError: a malformed line (named by file and line), or a duplicate entry with
            ``duplicates="error"``.
    """
    p = Path(path)
    check = RunCheck(str(p))
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for lineno, qid, doc, _, score in iter_trec_run(p):
        if doc in run[qid]:
            if duplicates == "error":
                raise InputError(
                    f"{p}:{lineno} repeats document {doc!r} for query {qid!r}; a run lists each document once per "
                    "query (pass --skip-bad to keep the first and count the rest)"
                )
            check.duplicates += 1
            continue
        run[qid][doc] = score
    check.queries = len(run)
    check.entries = sum(len(d) for d in run.values())
    return dict(run), check


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Metrics of one or more runs against the same judgments.

    Attributes:
        measures: the measures, as ir-measures names.
        aggregate: run name -> measure -> mean over queries.
        per_query: run name -> measure -> query -> value.
        queries: the judged queries that were scored.
        checks: run name -> what reading the run found.
    """

    measures: list[str]
    aggregate: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    queries: list[str]
    checks: dict[str, RunCheck]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return {
            "measures": self.measures,
            "queries": len(self.queries),
            "aggregate": self.aggregate,
            "per_query": self.per_query,
            "notes": {name: c.notes() for name, c in self.checks.items()},
        }


def parse_measures(spec: str | list[str], rel: int | None = None) -> list[Any]:
    """Return ir-measures measures from names like ``"nDCG@10 RR@10 R@100"``.

    ``rel`` sets the relevance cut-off of binary measures (RR, R, AP, P...): TREC DL counts grade
    >= 2 as relevant for them. Graded measures (nDCG) keep the grades as gains.

    Raises:
        InputError: a name ir-measures does not know.
    """
    ir_measures = require("ir_measures", feature="evaluation")
    names = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    if not names:
        raise InputError("name at least one measure, e.g. --measures 'nDCG@10 RR@10 R@100'")
    out = []
    for name in names:
        try:
            m = ir_measures.parse_measure(name)
        except (ValueError, NameError, TypeError, AttributeError) as err:
            raise InputError(f"unknown measure {name!r} ({err}); examples: nDCG@10 RR@10 R@100 AP P@10") from err
        if rel is not None and m.NAME in _BINARY and "rel" not in m.params:
            m = m(rel=rel)
        out.append(m)
    return out


def evaluate(
    qrels: dict[str, dict[str, int]],
    runs: dict[str, dict[str, dict[str, float]]],
    measures: str | list[str] = DEFAULT_MEASURES,
    *,
    rel: int | None = None,
    missing: Literal["skip", "zero"] = "skip",
    checks: dict[str, RunCheck] | None = None,
) -> Evaluation:
    """Return each run's measures, per query and averaged, computed by ir-measures (pytrec_eval).

    Args:
        qrels: ``{query: {doc: grade}}``.
        runs: run name -> ``{query: {doc: score}}``.
        measures: ir-measures names.
        rel: relevance cut-off for binary measures (``2`` for TREC DL).
        missing: judged queries a run has no results for are left out (``"skip"``, trec_eval's
            default) or score 0 (``"zero"``, trec_eval ``-c``). Either way the count is reported.
        checks: what reading each run found (from :func:`read_run_checked`), completed here.

    Raises:
        InputError: no judged query is in a run.
    """
    ir_measures = require("ir_measures", feature="evaluation")
    ms = parse_measures(measures, rel)
    checks = dict(checks or {})
    qrel_list = [ir_measures.Qrel(q, d, int(g)) for q, docs in qrels.items() for d, g in docs.items()]
    aggregate: dict[str, dict[str, float]] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    judged = sorted(qrels)
    scored: set[str] = set()
    for name, run in runs.items():
        check = checks.setdefault(name, RunCheck(name))
        check.unjudged_queries = sorted(q for q in run if q not in qrels)
        check.missing_queries = [q for q in judged if q not in run or not run[q]]
        if len(check.missing_queries) == len(judged):
            raise InputError(
                f"run {name}: none of its {plural(len(run), 'query')} has judgments in the qrels; "
                "do the query ids match?"
            )
        docs = [ir_measures.ScoredDoc(q, d, s) for q, hits in run.items() if q in qrels for d, s in hits.items()]
        values: dict[str, dict[str, float]] = {str(m): {} for m in ms}
        for qm in ir_measures.iter_calc(ms, qrel_list, docs):
            values[str(qm.measure)][qm.query_id] = float(qm.value)
        for m in ms:  # ir-measures fills in judged queries a run lacks; trec_eval (without -c) leaves them out
            for q in check.missing_queries:
                if missing == "zero":
                    values[str(m)][q] = 0.0
                else:
                    values[str(m)].pop(q, None)
        per_query[name] = values
        aggregate[name] = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in values.items()}
        scored |= {q for v in values.values() for q in v}
    return Evaluation([str(m) for m in ms], aggregate, per_query, sorted(scored), checks)
