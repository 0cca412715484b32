"""The drift and verdict figures of docs/monitoring.md, measured again.

Reranks with the default model the BM25 top 20 of all TREC DL 2019 queries (the profile), of
all DL 2021 queries and of the first 60 CISI queries (BM25 over all of CISI, built in a temporary
folder). It then prints:

- the verdict of each set;
- for each sliding window of 30 consecutive queries, whether it drifted from the DL 2019
  profile, and which signals did (flagged) or which inputs did (reported);
- for CISI, the drift report of its first 5, 10 and 30 queries;
- how many DL 2019 windows had a signal with PSI over 0.25 (the reason the KS test is also
  required).

Also: the cost of the signals next to reranking at depth 100 (medians over the first 5 DL 2019
queries).

    python bench/monitor_drift.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from crossrank import CrossEncoder
from crossrank.documents import record_text
from crossrank.drift import MIN_QUERIES, PSI_THRESHOLD, Profile, drift
from crossrank.evaluate.monitor import index_signals, run_signals, verdict
from crossrank.io import read_run_candidates
from crossrank.retrieve.index import Index
from crossrank.signals import query_signals

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CROSSRANK_SHARED", ROOT.parent / "shared")) / "data"
DEPTH = 20


def main() -> None:
    ce = CrossEncoder("default")
    sets = {}
    for name in ("trec-dl-2019-passage", "trec-dl-2021-passage"):
        folder = DATA / name
        sets[name] = list(
            run_signals(
                ce,
                run=folder / "runs" / "bm25.top100.trec",
                queries=folder / "queries.jsonl",
                corpus=folder / "corpus.jsonl",
                depth=DEPTH,
                progress=True,
            ).values()
        )
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.build(Path(tmp) / "cisi", DATA / "cisi" / "corpus.jsonl", retriever="bm25")
        sets["cisi"] = list(
            index_signals(ce, index=index, queries=DATA / "cisi" / "queries.jsonl", depth=DEPTH, limit=60).values()
        )
    profile = Profile.from_signals(sets["trec-dl-2019-passage"], model=ce.name, depth=DEPTH)
    for name, window in sets.items():
        print(f"{name}: {len(window)} queries, verdict {verdict(window).to_dict()}")
        flags = [drift(profile, window[s : s + MIN_QUERIES]) for s in range(len(window) - MIN_QUERIES + 1)]
        inputs = sorted({i for r in flags for i in r.drifted_inputs})
        print(f"  windows of {MIN_QUERIES}: {sum(r.drifted for r in flags)} of {len(flags)} drifted; inputs {inputs}")
        noisy = [r for r in flags if max(d.psi for d in r.signals.values()) > PSI_THRESHOLD]
        print(f"  windows with some PSI > {PSI_THRESHOLD}: {len(noisy)}")
    for n in (5, 10, 30):
        report = drift(profile, sets["cisi"][:n])
        print(f"cisi, first {n}: flagged {report.drifted_signals}, inputs {report.drifted_inputs}")

    folder = DATA / "trec-dl-2019-passage"
    cands = read_run_candidates(
        folder / "runs" / "bm25.top100.trec", folder / "queries.jsonl", folder / "corpus.jsonl", depth=100
    )
    rerank_s, signal_s = [], []
    for query, docs in list(zip(cands.queries, cands.documents, strict=True))[:5]:
        t = time.perf_counter()
        ranking = ce.rerank(query, list(docs))
        rerank_s.append(time.perf_counter() - t)
        texts = [record_text(d) for d in docs]
        scores = np.array([h.score for h in sorted(ranking.hits, key=lambda h: h.index)], dtype=np.float32)
        t = time.perf_counter()
        for _ in range(200):
            query_signals(scores, query=query, texts=texts)
        signal_s.append((time.perf_counter() - t) / 200)
    share = 100 * np.median(signal_s) / np.median(rerank_s)
    print(f"depth 100: rerank {np.median(rerank_s):.3f} s, signals {1000 * np.median(signal_s):.3f} ms ({share:.4f}%)")


if __name__ == "__main__":
    sys.exit(main())
