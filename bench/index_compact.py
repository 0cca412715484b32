"""What compaction buys an index that has been updated many times.

A hybrid index (BM25 + bge-small-en, exact vector search) over the 10,852 TREC DL 2019 passages is
grown the way a live index is: built from 1/20 of the documents, then 19 ``add`` calls, then an
upsert of 10% of the documents (new segment, old rows dead) and a delete of another 10%. A copy of
it is compacted (``Index.compact()``: one segment, no dead rows), and the two are measured in
alternating rounds (best of 3): per-query latency of each first stage (the 43 judged DL 2019
queries, one query per call), the latency of looking up 100 documents by id, the size on disk, and
whether every first stage returns the same ids and scores. A second part adds documents one at a
time (a service's pattern), with and without the automatic merge (``max_segments``), and reports
adds per second, segments and the process's open files.

    python bench/index_compact.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"
WORK = ROOT / "bench" / ".work" / "compact"
RETRIEVERS = ("bm25", "dense", "hybrid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adds", type=int, default=19, help="add calls after the first build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small-adds", type=int, default=200, help="single-document adds in the second part")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-index-compact.json")
    args = ap.parse_args()

    from crossrank.io import read_beir_queries, read_jsonl, read_qrels
    from crossrank.retrieve.index import Index

    docs = list(read_jsonl(DATA / "corpus.jsonl"))
    qrels = read_qrels(DATA / "qrels" / "test.tsv")
    queries = [text for qid, text in read_beir_queries(DATA / "queries.jsonl").items() if qid in qrels]
    rng = random.Random(13)
    rng.shuffle(docs)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    parts = [docs[i :: args.adds + 1] for i in range(args.adds + 1)]
    t0 = time.perf_counter()
    index = Index.build(WORK / "index", parts[0], retriever="hybrid", ann="exact", progress=True)
    for part in parts[1:]:
        index.add(part)
    upserted = docs[: len(docs) // 10]
    index.update([{**d, "text": d["text"] + " (revised)"} for d in upserted])
    index.delete([str(d["_id"]) for d in docs[len(docs) // 10 : len(docs) // 5]])
    grow_s = time.perf_counter() - t0
    print(f"grown in {grow_s:.0f} s: {index}, {len(index.segments)} segments", flush=True)

    lookup_ids = [str(d["_id"]) for d in rng.sample(docs[len(docs) // 5 :], 100)]

    def timings(idx: Index) -> dict[str, float]:
        out: dict[str, float] = {}
        for retriever in RETRIEVERS:
            times = []
            for q in queries:
                t = time.perf_counter()
                idx.retrieve([q], k=100, retriever=retriever)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t) * 1000)
            out[f"{retriever}_p50_ms"] = statistics.median(times)
        t = time.perf_counter()
        idx.get(lookup_ids)
        out["get_100_ms"] = (time.perf_counter() - t) * 1000
        return out

    def ranked(idx: Index) -> dict[str, list[list[tuple[str, float]]]]:
        return {
            r: [
                list(zip(idx.doc_ids(c.slots), c.scores.tolist(), strict=True))
                for c in idx.retrieve(queries, k=100, retriever=r)  # type: ignore[arg-type]
            ]
            for r in RETRIEVERS
        }

    # keep the grown index as it is, and compact a copy: both are measured in the same rounds
    shutil.copytree(WORK / "index", WORK / "compacted")
    compacted = Index.open(WORK / "compacted")
    t = time.perf_counter()
    report = compacted.compact(progress=True)
    compact_s = time.perf_counter() - t
    sides = {"before": index, "after": compacted}
    for idx in sides.values():
        timings(idx)  # warm-up
    rounds: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for name, idx in sides.items():
            rounds[name].append(timings(idx))
    before: dict[str, Any] = {k: round(min(r[k] for r in rounds["before"]), 3) for k in rounds["before"][0]}
    after: dict[str, Any] = {k: round(min(r[k] for r in rounds["after"]), 3) for k in rounds["after"][0]}
    for name, idx in sides.items():
        row = before if name == "before" else after
        row.update(
            segments=len(idx.segments), dead_rows=int((~idx.live).sum()), bytes_on_disk=idx.info()["bytes_on_disk"]
        )
    ranked_before, ranked_after = ranked(index), ranked(compacted)
    same: dict[str, Any] = {}
    for r in RETRIEVERS:
        reordered = sum(
            [d for d, _ in a] != [d for d, _ in b] for a, b in zip(ranked_before[r], ranked_after[r], strict=True)
        )
        pairs = zip(ranked_before[r], ranked_after[r], strict=True)
        diff = max(abs(x[1] - y[1]) for a, b in pairs for x, y in zip(a, b, strict=True))
        # vector scores come from a matrix product over other blocks: float32 sums may differ in the last bit
        same[r] = {"queries_reordered": reordered, "max_score_difference": diff}

    rows = [("segments", "segments"), ("dead rows", "dead_rows"), ("size on disk (MB)", "bytes_on_disk")]
    rows += [(f"{r} query p50 (ms, k=100)", f"{r}_p50_ms") for r in RETRIEVERS] + [("get 100 ids (ms)", "get_100_ms")]
    print(f"\ncompacted {len(compacted)} documents in {compact_s:.2f} s (purged {report.purged} dead rows)")
    print("| measure | before | after | before / after |\n|---|---|---|---|")
    for label, key in rows:
        b, a = before[key], after[key]
        if key == "bytes_on_disk":
            b, a = round(b / 1e6, 1), round(a / 1e6, 1)
        ratio = f"{b / a:.2f}x" if a else "-"
        print(f"| {label} | {b} | {a} | {ratio} |")
    print("results after compaction:", same)
    result = {
        "documents": len(compacted),
        "grow_seconds": round(grow_s, 1),
        "compact_seconds": round(compact_s, 3),
        "purged": report.purged,
        "before": before,
        "after": after,
        "same_results": same,
        "command": "python bench/index_compact.py",
    }
    index.close()
    compacted.close()
    del index, compacted, sides
    result["small_adds"] = small_adds(docs[: args.small_adds + 1])
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def small_adds(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """A service's pattern: one document per ``add``, with and without the automatic merge."""
    import gc
    import os

    from crossrank.retrieve.index import MAX_SEGMENTS, Index

    def open_files() -> int:
        gc.collect()  # memory maps of closed indexes go with their objects
        return len(os.listdir("/proc/self/fd"))

    out: dict[str, Any] = {}
    print(f"\n{len(docs) - 1} single-document adds to a hybrid index:")
    print("| max_segments | adds/s | segments at the end | most segments | files the index holds open |")
    print("|---|---|---|---|---|")
    for max_segments in (None, MAX_SEGMENTS):
        folder = WORK / f"small-adds-{max_segments}"
        baseline = open_files()
        index = Index.build(folder, docs[:1], retriever="hybrid", ann="exact")
        most = 0
        t = time.perf_counter()
        for doc in docs[1:]:
            index.add([doc], max_segments=max_segments)
            most = max(most, len(index.segments))
        rate = (len(docs) - 1) / (time.perf_counter() - t)
        fds = open_files() - baseline
        row = {"adds_per_s": round(rate, 1), "segments": len(index.segments), "most_segments": most, "open_files": fds}
        out[str(max_segments)] = row
        print(f"| {max_segments} | {rate:.1f} | {len(index.segments)} | {most} | {fds} |")
        index.close()
        del index
    return out


if __name__ == "__main__":
    main()
