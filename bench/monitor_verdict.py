"""Does the label-free verdict discriminate? `crossrank monitor verdict` on seven judged collections.

For each collection, the default cross-encoder reranks every judged query's first-stage top 100
(the BM25 runs shipped with TREC DL 2019 and 2021; crossrank's hybrid index, BM25 + bge-small-en
with RRF, on NFCorpus, Cranfield, CISI, CACM and Vaswani; scores cached in bench/.work/ce-cache,
shared with bench/tune_safety.py). Then, by the labels: nDCG@10 of the first stage and of the
reranking, per query, and whether reranking is significantly worse or better than the first stage
(paired t-test, two-sided, p < 0.05). Without them: the verdict of the collection's signals against
the default model's shipped reference profile (its DL 2019 signals), and, leaving each collection
out, against a profile that does not contain it (DL 2019 is judged against a DL 2021 profile).

It also reports every signal's per-query Spearman correlation with the labelled change in nDCG@10
(reranked - first stage), per collection and pooled, and the pooled AUC of the verdict's score
(``top_score + score_std + 0.5 * rbo``; lower = worse) for "reranking hurt this query".

Bars (issue 25): *helping* on DL 2019 and DL 2021; never *helping* where reranking is
significantly worse than the first stage by the labels.

    python bench/monitor_verdict.py --json docs/bench-monitor-verdict.json
    python bench/monitor_verdict.py --write-reference      # rewrite the shipped DL 2019 reference profile
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / ".work"
DL = ["trec-dl-2019-passage", "trec-dl-2021-passage"]
HYBRID = ["nfcorpus-preproc", "cranfield", "cisi", "cacm", "vaswani"]
DEPTH = 100
SIGNALS = ("kendall_tau", "rbo", "displacement", "top_score", "margin", "score_std", "score_iqr", "query_words")
REFERENCE = ROOT / "src" / "crossrank" / "data" / "profiles" / "default.json"


def collection(name: str, ce: Any) -> dict[str, Any]:
    """Rerank a collection's judged queries; return per-query signals and nDCG@10 of both stages."""
    from crossrank import Pipeline
    from crossrank.evaluate.metrics import evaluate
    from crossrank.io import read_beir_queries, read_qrels, read_run_candidates
    from crossrank.retrieve.index import Index

    folder = DATA / name
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    texts = read_beir_queries(folder / "queries.jsonl")
    judged = [q for q in texts if q in qrels and any(g > 0 for g in qrels[q].values())]
    first: dict[str, dict[str, float]] = {}
    reranked: dict[str, dict[str, float]] = {}
    signals = {}
    if name in DL:
        cands = read_run_candidates(
            folder / "runs" / "bm25.top100.trec", folder / "queries.jsonl", folder / "corpus.jsonl", depth=DEPTH
        )
        keep = [i for i, q in enumerate(cands.query_ids) if q in set(judged)]
        rankings = ce.rerank_many([cands.queries[i] for i in keep], [list(cands.documents[i]) for i in keep], k=None)
        for i, ranking in zip(keep, rankings, strict=True):
            qid = cands.query_ids[i]
            first[qid] = {str(d["id"]): float(-j) for j, d in enumerate(cands.documents[i])}
            reranked[qid] = {h.doc_id: float(h.score) for h in ranking.hits}
            signals[qid] = ranking.signals
    else:
        idx_dir = WORK / f"index-{name}"
        try:
            index = Index.open(idx_dir)
        except Exception:
            index = Index.build(idx_dir, folder, retriever="hybrid", ann="exact", overwrite=True, progress=True)
        pipe = Pipeline(index, reranker=ce)
        results = pipe.search_many({q: texts[q] for q in judged}, k=DEPTH, depth=DEPTH, retriever="hybrid")
        for qid, r in zip(judged, results, strict=True):
            first[qid] = {h.doc_id: float(-h.first_stage_rank) for h in r.hits}
            reranked[qid] = {h.doc_id: float(h.score) for h in r.hits}
            signals[qid] = r.signals
    ev = evaluate(qrels, {"first": first, "rerank": reranked}, "nDCG@10", missing="zero")
    a, b = ev.per_query["first"]["nDCG@10"], ev.per_query["rerank"]["nDCG@10"]
    qids = [q for q in judged if q in a and q in b and signals.get(q) is not None]
    return {
        "qids": qids,
        "signals": [signals[q] for q in qids],
        "first": np.array([a[q] for q in qids]),
        "rerank": np.array([b[q] for q in qids]),
    }


def auc(hurt: np.ndarray, score: np.ndarray) -> float:
    """AUC of ``-score`` for ``hurt`` (Mann-Whitney); 0.5 = no better than chance."""
    from scipy import stats

    if hurt.all() or not hurt.any():
        return float("nan")
    return float(stats.mannwhitneyu(-score[hurt], -score[~hurt]).statistic / (hurt.sum() * (~hurt).sum()))


def correlations(sigs: list[Any], delta: np.ndarray) -> dict[str, float]:
    from scipy import stats

    out = {}
    for name in SIGNALS:
        values = np.array([float(getattr(s, name)) for s in sigs])
        out[name] = (
            float(stats.spearmanr(values, delta).statistic) if values.std() > 0 and delta.std() > 0 else float("nan")
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(DL + HYBRID))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write-reference", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)} from DL 2019")
    args = ap.parse_args()
    from scipy import stats

    from crossrank import CrossEncoder
    from crossrank.drift import Profile
    from crossrank.evaluate.monitor import builtin_reference, verdict
    from crossrank.rerank.config import ScoringConfig

    ce = CrossEncoder("default", config=ScoringConfig(cache_size=400_000, cache_dir=WORK / "ce-cache"), progress=True)
    names = args.sets.split(",")
    if args.write_reference and DL[0] not in names:
        names.insert(0, DL[0])
    found = {}
    for name in names:
        t0 = time.perf_counter()
        found[name] = collection(name, ce)
        print(f"{name}: {len(found[name]['qids'])} judged queries in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    def profile_of(name: str) -> Profile:
        return Profile.from_signals(
            found[name]["signals"], model=ce.name, activation=ce.activation, depth=DEPTH,
            source=f"{name} (BM25 top {DEPTH}), {len(found[name]['qids'])} judged queries",
        )  # fmt: skip

    if args.write_reference:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        ref = profile_of(DL[0])
        REFERENCE.write_text(json.dumps({**ref.to_dict(), "created": 0.0}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {REFERENCE}", file=sys.stderr)
    shipped = builtin_reference("default")
    assert shipped is not None
    rows = []
    pooled_sig: list[Any] = []
    pooled_delta: list[float] = []
    print(
        f"\n{'collection':22s} {'n':>4s} {'first':>7s} {'rerank':>7s} {'delta':>7s} {'p':>7s} {'by labels':>11s} "
        f"{'verdict (shipped)':>18s} {'verdict (LOCO)':>15s}"
    )
    for name, got in found.items():
        delta = got["rerank"] - got["first"]
        p = float(stats.ttest_rel(got["rerank"], got["first"]).pvalue) if delta.std() > 0 else 1.0
        by_labels = "worse" if p < 0.05 and delta.mean() < 0 else ("better" if p < 0.05 else "no difference")
        held_out = shipped if name != DL[0] else (profile_of(DL[1]) if DL[1] in found else None)
        v_shipped = verdict(got["signals"], activation=ce.activation, reference=shipped)
        v_loco = verdict(got["signals"], activation=ce.activation, reference=held_out)
        row = {
            "collection": name,
            "queries": len(got["qids"]),
            "first_stage": "bm25" if name in DL else "hybrid",
            "ndcg10_first": float(got["first"].mean()),
            "ndcg10_rerank": float(got["rerank"].mean()),
            "delta": float(delta.mean()),
            "p_value": p,
            "by_labels": by_labels,
            "verdict_shipped_reference": v_shipped.to_dict(),
            "verdict_held_out_reference": v_loco.to_dict(),
            "held_out_reference": held_out.source if held_out is not None else None,
            "spearman_with_delta": correlations(got["signals"], delta),
            "auc_hurt": auc(delta < 0, np.array([s.top_score + s.score_std + 0.5 * s.rbo for s in got["signals"]])),
        }
        rows.append(row)
        pooled_sig += got["signals"]
        pooled_delta += delta.tolist()
        print(
            f"{name:22s} {row['queries']:4d} {row['ndcg10_first']:7.4f} {row['ndcg10_rerank']:7.4f} "
            f"{row['delta']:+7.4f} {p:7.3g} {by_labels:>11s} {v_shipped.label:>18s} {v_loco.label:>15s}"
        )
    delta_all = np.array(pooled_delta)
    score_all = np.array([s.top_score + s.score_std + 0.5 * s.rbo for s in pooled_sig])
    pooled = {"spearman_with_delta": correlations(pooled_sig, delta_all), "auc_hurt": auc(delta_all < 0, score_all)}
    loco_auc = {}
    for row in rows:  # the score has no fitted threshold; AUC pooled over the other collections
        others = [r["collection"] for r in rows if r["collection"] != row["collection"]]
        sig = [s for n in others for s in found[n]["signals"]]
        d = np.concatenate([found[n]["rerank"] - found[n]["first"] for n in others])
        loco_auc[row["collection"]] = auc(d < 0, np.array([s.top_score + s.score_std + 0.5 * s.rbo for s in sig]))
    print("\nper-query Spearman with the change in nDCG@10 (pooled):")
    for k, v in pooled["spearman_with_delta"].items():
        print(f"  {k:14s} {v:+.3f}")
    print(f"pooled AUC of the verdict score for 'reranking hurt this query': {pooled['auc_hurt']:.3f}")
    wrong = [r["collection"] for r in rows if r["by_labels"] == "worse" and "helping" in (
        r["verdict_shipped_reference"]["verdict"], r["verdict_held_out_reference"]["verdict"])]  # fmt: skip
    dl_ok = all(r["verdict_held_out_reference"]["verdict"] == "helping" for r in rows if r["collection"] in DL)
    print(
        f"bars: helping on DL 2019 and 2021 (held out): {dl_ok}; helping where reranking is worse: {wrong or 'never'}"
    )
    if args.json:
        out = {
            "bench": "monitor_verdict",
            "model": ce.name,
            "depth": DEPTH,
            "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            "collections": rows,
            "pooled": pooled,
            "auc_hurt_leave_one_collection_out": loco_auc,
            "bars": {"helping_on_dl": dl_ok, "helping_where_worse": wrong},
        }
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
