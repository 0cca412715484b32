"""Ray scale-out: pairs/s with 1 and 2 Ray workers against the single-process engine, in one run.

All engines score the same pairs (TREC DL 2019 BM25 top-100: 43 queries x 100 passages) with the
default model. Side by side:

- ``local-1t``: ``CrossEncoder`` in this process, one engine thread (what one Ray worker runs);
- ``local-2t``: the same with two threads (this machine's whole CPU, no Ray);
- ``ray-1w``/``ray-2w``: ``rerank_on_ray`` with 1 or 2 actors of one CPU each, on a local Ray
  cluster started for the run. Their time is the whole job: scheduling, actor start and model
  load included (a cold job), and separately the steady part, after every worker has finished
  its first block (blocks scored per second, times pairs per block).

Ratios printed: ray-2w / ray-1w (scaling), ray-1w / local-1t and ray-2w / local-2t (Ray's
overhead). This machine has 2 cores, so the figures are ratios, not capacity.

    python bench/ray_scale.py                       # about 4 minutes on 2 cores
    python bench/ray_scale.py --pairs 2000 --json docs/bench-ray-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DL19 = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4300, help="pairs to score (from the DL 2019 BM25 top-100)")
    ap.add_argument("--block-pairs", type=int, default=256)
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-ray-scale.json")
    args = ap.parse_args()

    import numpy as np
    import ray

    from crossrank import CrossEncoder, ScoringConfig
    from crossrank.scale import rerank_on_ray, run_pairs

    pairs, _ = run_pairs(DL19 / "runs" / "bm25.top100.trec", DL19 / "corpus.jsonl", DL19 / "queries.jsonl")
    pairs = pairs.slice(0, args.pairs)
    n = pairs.num_rows
    queries, texts = pairs.column("query").to_pylist(), pairs.column("text").to_pylist()
    rows: dict[str, dict[str, Any]] = {}

    for threads in (1, 2):
        ce = CrossEncoder("default", config=ScoringConfig(threads=threads))
        ce.score([("warm up", "warm up")])
        started = time.perf_counter()
        local = ce.score(list(zip(queries, texts, strict=True)))
        seconds = time.perf_counter() - started
        rows[f"local-{threads}t"] = {"seconds": round(seconds, 2), "pairs_per_s": round(n / seconds, 1)}
        print(f"local-{threads}t: {n / seconds:7.1f} pairs/s ({seconds:.1f} s)", flush=True)
        del ce

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        for workers in (1, 2):
            marks: list[float] = []

            def watch(ledger: Any, marks: list[float] = marks, workers: int = workers) -> None:
                import threading

                def run() -> None:
                    deadline = time.monotonic() + 600
                    while time.monotonic() < deadline:
                        stats = ray.get(ledger.stats.remote())
                        if stats["finished"] >= workers:  # every worker is up and has scored a block
                            marks.extend([time.perf_counter(), float(stats["finished"])])
                            return
                        time.sleep(0.05)

                threading.Thread(target=run, daemon=True).start()

            started = time.perf_counter()
            result = rerank_on_ray(pairs, workers=workers, block_pairs=args.block_pairs, on_start=watch)
            ended = time.perf_counter()
            s = result.summary
            steady = None
            if marks:
                blocks_left = s.blocks - marks[1]
                steady = round(blocks_left * args.block_pairs / (ended - marks[0]), 1) if blocks_left > 0 else None
            diff = float(np.abs(result.table.column("score").to_numpy() - local).max())
            rows[f"ray-{workers}w"] = {
                "seconds": round(ended - started, 2),
                "pairs_per_s": round(n / (ended - started), 1),
                "steady_pairs_per_s": steady,
                "max_abs_diff_vs_local": diff,
                "blocks": s.blocks,
                "retries": s.retries,
            }
            print(
                f"ray-{workers}w:  {n / (ended - started):7.1f} pairs/s cold ({ended - started:.1f} s), "
                f"steady {steady} pairs/s, max |diff| vs local {diff:.2g}",
                flush=True,
            )
    finally:
        ray.shutdown()

    def ratio(a: str, b: str, key: str = "pairs_per_s") -> float | None:
        x, y = rows[a].get(key), rows[b].get("pairs_per_s")
        return round(x / y, 3) if x and y else None

    ratios = {
        "ray-2w / ray-1w (cold)": ratio("ray-2w", "ray-1w"),
        "ray-2w / ray-1w (steady)": (
            round(rows["ray-2w"]["steady_pairs_per_s"] / rows["ray-1w"]["steady_pairs_per_s"], 3)
            if rows["ray-2w"]["steady_pairs_per_s"] and rows["ray-1w"]["steady_pairs_per_s"]
            else None
        ),
        "ray-1w / local-1t (cold)": ratio("ray-1w", "local-1t"),
        "ray-1w / local-1t (steady)": ratio("ray-1w", "local-1t", "steady_pairs_per_s"),
        "ray-2w / local-2t (cold)": ratio("ray-2w", "local-2t"),
        "ray-2w / local-2t (steady)": ratio("ray-2w", "local-2t", "steady_pairs_per_s"),
    }
    print("\nratios (2-core machine; read as ratios, not capacity):")
    for name, value in ratios.items():
        print(f"  {name:28s} {value}")
    out = {
        "command": "python bench/ray_scale.py",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "pairs": n,
        "block_pairs": args.block_pairs,
        "rows": rows,
        "ratios": ratios,
    }
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
