"""Is tuning from 30 judged queries safe? `crossrank tune`'s rule, held out, on seven judged collections.

For each collection: every judged test query's first-stage top 100 is reranked once by the default
cross-encoder (scores cached in bench/.work/ce-cache, shared with bench/retrieval_quality.py), and
nDCG@10 of every candidate setting `crossrank tune` tries is computed per query
(crossrank.evaluate.tune.ndcg_matrix, the pipeline's own ranking). Then, 10 times, 30 queries are
drawn at random (seeded) as "the judged ones": the rule chooses a setting on them
(crossrank.evaluate.tune.tune_matrix), and the choice is measured on the remaining queries, beside
the two fixed choices: the first stage alone, and reranking the top 100 by the cross-encoder.

First stages: the BM25 top 100 shipped with TREC DL 2019 and 2021; crossrank's hybrid index (BM25 +
bge-small-en, RRF; built as bench/retrieval_quality.py builds it) on NFCorpus, Cranfield, CISI,
CACM and Vaswani.

Bars (issue 25): on every collection the tuned setting's mean over the draws is not significantly
worse than the better fixed choice (paired t-test over the 10 draws, one-sided, p < 0.05); on DL
2019 and 2021 it keeps at least 95% of the rerank-all gain.

    python bench/tune_safety.py                       # over an hour on 2 busy cores with a cold cache (indexes, scores)
    python bench/tune_safety.py --sets trec-dl-2019-passage,cisi --draws 5
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


def _judged(name: str, ce: Any, depth: int) -> tuple[list[Any], dict[str, dict[str, int]]]:
    from crossrank.evaluate.tune import judged_from_index, judged_from_run
    from crossrank.io import read_beir_queries, read_qrels
    from crossrank.retrieve.index import Index

    folder = DATA / name
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    texts = read_beir_queries(folder / "queries.jsonl")
    judged_ids = [q for q in texts if q in qrels and any(g > 0 for g in qrels[q].values())]
    if name in DL:
        found = judged_from_run(
            ce, folder / "runs" / "bm25.top100.trec", folder / "queries.jsonl", folder / "corpus.jsonl",
            depth=depth, only=judged_ids,
        )  # fmt: skip
        return found, qrels
    idx_dir = WORK / f"index-{name}"
    try:
        index = Index.open(idx_dir)
    except Exception:
        index = Index.build(idx_dir, folder, retriever="hybrid", ann="exact", overwrite=True, progress=True,
                            on_error="skip")  # fmt: skip
    found = judged_from_index(ce, index, {q: texts[q] for q in judged_ids}, depth=depth, retriever="hybrid")
    index.close()
    return found, qrels


def evaluate(name: str, ce: Any, *, draws: int, judged: int, depth: int, seed: int) -> dict[str, Any]:
    from scipy import stats

    from crossrank.evaluate.tune import candidate_settings, ndcg_matrix, tune_matrix

    queries, qrels = _judged(name, ce, depth)
    queries = [q for q in queries if any(g > 0 for g in qrels.get(q.query_id, {}).values())]
    candidates = candidate_settings(depth)
    m = ndcg_matrix(queries, qrels, candidates, activation=ce.activation)
    labels = [c.label for c in candidates]
    first, full = labels.index("first stage"), labels.index(f"rerank@{depth}")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(draws):
        perm = rng.permutation(m.shape[1])
        train, test = perm[:judged], perm[judged:]
        report = tune_matrix(m[:, train], candidates, seed=int(rng.integers(1 << 31)))
        pick = labels.index(report.chosen)
        rows.append(
            {
                "chosen": report.chosen,
                "tuned": float(m[pick, test].mean()),
                "first_stage": float(m[first, test].mean()),
                "rerank_all": float(m[full, test].mean()),
                "cv_gain": report.cv_gain[0],
                "p_not_positive": report.cv_gain[3],
            }
        )
    tuned = np.array([r["tuned"] for r in rows])
    fs = np.array([r["first_stage"] for r in rows])
    ra = np.array([r["rerank_all"] for r in rows])
    better_name, better = ("rerank_all", ra) if ra.mean() >= fs.mean() else ("first_stage", fs)
    diff = tuned - better
    # one-sided: is the tuned setting worse than the better fixed choice? (0 when they never differ)
    p_worse = 1.0 if np.allclose(diff, 0) else float(stats.ttest_rel(tuned, better, alternative="less").pvalue)
    gain_kept = float((tuned - fs).mean() / (ra - fs).mean()) if (ra - fs).mean() > 0 else None
    return {
        "collection": name,
        "first_stage": "BM25 top 100 (shipped run)" if name in DL else "crossrank hybrid (BM25 + bge-small-en, RRF)",
        "queries": int(m.shape[1]),
        "judged_per_draw": judged,
        "draws": draws,
        "tuned_mean": float(tuned.mean()),
        "tuned_std": float(tuned.std(ddof=1)),
        "first_stage_mean": float(fs.mean()),
        "first_stage_std": float(fs.std(ddof=1)),
        "rerank_all_mean": float(ra.mean()),
        "rerank_all_std": float(ra.std(ddof=1)),
        "better_fixed": better_name,
        "tuned_minus_better_mean": float(diff.mean()),
        "p_tuned_worse_than_better": p_worse,
        "not_significantly_worse": bool(p_worse >= 0.05),
        "rerank_gain_kept": gain_kept,
        "choices": {c: sum(r["chosen"] == c for r in rows) for c in sorted({r["chosen"] for r in rows})},
        "per_draw": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(DL + HYBRID))
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--judged", type=int, default=30)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-tune-safety.json")
    args = ap.parse_args()

    from crossrank import CrossEncoder, ScoringConfig
    from crossrank.cpu import cpu_flags

    ce = CrossEncoder("default", config=ScoringConfig(cache_size=400_000, cache_dir=WORK / "ce-cache"), progress=True)
    started = time.time()
    results = []
    for name in args.sets.split(","):
        r = evaluate(name, ce, draws=args.draws, judged=args.judged, depth=args.depth, seed=args.seed)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "per_draw"}), flush=True)
    print()
    print(
        "| collection | first stage | queries | first stage only | rerank top 100 | tuned on 30 "
        "| tuned - better | p (worse) | gain kept | choices |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        kept = "" if r["rerank_gain_kept"] is None else f"{100 * r['rerank_gain_kept']:.1f}%"
        choices = ", ".join(f"{c} x{n}" for c, n in r["choices"].items())
        print(
            f"| {r['collection']} | {r['first_stage']} | {r['queries']} "
            f"| {r['first_stage_mean']:.4f} ± {r['first_stage_std']:.4f} "
            f"| {r['rerank_all_mean']:.4f} ± {r['rerank_all_std']:.4f} "
            f"| {r['tuned_mean']:.4f} ± {r['tuned_std']:.4f} | {r['tuned_minus_better_mean']:+.4f} "
            f"| {r['p_tuned_worse_than_better']:.3f} | {kept} | {choices} |"
        )
    payload = {
        "command": "python bench/tune_safety.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "isa": sorted(cpu_flags())},
        "seconds": round(time.time() - started, 1),
        "results": results,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
