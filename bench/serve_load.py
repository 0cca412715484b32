"""Load on ``crossrank serve`` over loopback: dynamic batching against one-request-at-a-time serving.

Concurrent clients send Cohere v1 rerank requests of 100 documents each (a query and its BM25
top-100 from TREC DL 2019) to a server started as its own process on 127.0.0.1. Each run is
bounded by a request count and a time limit. Servers compared:

- ``batching``: ``crossrank serve`` as shipped (dynamic batching across requests);
- ``no-batching``: ``crossrank serve --no-batching`` (the same server, one request at a time);
- ``naive``: a plain FastAPI endpoint calling ``CrossEncoder.rerank`` in its thread pool, the
  usual hand-written service (requests run side by side, nothing merged).

It reports requests/s, pairs/s, p50/p99 latency and errors for each server and concurrency, the
library's own pairs/s on the same pairs in-process (no HTTP), and the ratios.

    python bench/serve_load.py                               # concurrency 1 and 8, ~4 minutes on 2 cores
    python bench/serve_load.py --concurrency 8 --requests 48 --modes batching,no-batching
    python bench/serve_load.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DL19 = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"
EXAMPLE_DL19 = ROOT / "examples" / "dl19"
MODES = ("batching", "no-batching", "naive")

sys.path.insert(0, str(ROOT / "bench"))
from overload import stop_server, wait_ready  # noqa: E402  (one way to start and stop a bench server)

# ----------------------------------------------------------------------------- data


def load_requests(data: Path | None, depth: int) -> list[tuple[str, list[str]]]:
    """Return (query, top-``depth`` BM25 texts) per query."""
    from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run

    if data is None:
        data = SHARED_DL19 if (SHARED_DL19 / "corpus.jsonl").is_file() else EXAMPLE_DL19
    run_file = data / "runs" / "bm25.top100.trec"
    if not run_file.is_file():
        run_file = data / "bm25.top100.trec"
    corpus = read_beir_corpus(data / "corpus.jsonl")
    queries = read_beir_queries(data / "queries.jsonl")
    run = read_trec_run(run_file)
    out = []
    for qid, cands in run.items():
        if qid in queries and len(cands) >= depth:
            out.append((queries[qid], [corpus[d]["text"] for d, _ in cands[:depth]]))
    if not out:
        sys.exit(f"no query with {depth} candidates in {run_file}")
    return out


# ----------------------------------------------------------------------------- library reference


def library_pairs_per_second(requests: list[tuple[str, list[str]]], n: int) -> dict[str, float]:
    """Return the library's pairs/s on ``n`` requests: one call for all, and one call per request."""
    from crossrank import CrossEncoder

    ce = CrossEncoder("default")
    ce.score([("warm up", "warm up")])
    batch = [requests[i % len(requests)] for i in range(n)]
    ce.rerank(*batch[0])
    t0 = time.perf_counter()
    ce.rerank_many([q for q, _ in batch], [d for _, d in batch])
    together = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q, d in batch:
        ce.rerank(q, d)
    one_by_one = time.perf_counter() - t0
    pairs = sum(len(d) for _, d in batch)
    del ce
    gc.collect()
    return {"rerank_many": pairs / together, "rerank_per_request": pairs / one_by_one}


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(mode: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    if mode == "naive":
        cmd = [sys.executable, __file__, "--naive-server", str(port)]
    else:
        code = (
            "import sys; from crossrank.cli import serve_cmd; from crossrank.cli.app import main; "
            "sys.argv = ['crossrank', *sys.argv[1:]]; main()"
        )
        cmd = [
            sys.executable,
            "-c",
            code,
            "serve",
            "--port",
            str(port),
            "--queue-size",
            "1024",
            "--timeout",
            "600",
            "--quiet",
        ]
        if mode == "no-batching":
            cmd.append("--no-batching")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return proc


def run_naive_server(port: int) -> None:
    """A plain FastAPI service: a sync endpoint calls CrossEncoder.rerank from its thread pool."""
    import uvicorn
    from fastapi import FastAPI

    from crossrank import CrossEncoder

    ce = CrossEncoder("default")
    ce.score([("warm up", "warm up")])
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/rerank")
    def rerank(body: dict[str, Any]) -> dict[str, Any]:
        ranking = ce.rerank(body["query"], body["documents"], k=body.get("top_n"))
        return {"results": [{"index": h.index, "relevance_score": h.score} for h in ranking.hits]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws="none")


# ----------------------------------------------------------------------------- load


async def load(base: str, bodies: list[bytes], concurrency: int, n_requests: int, max_seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while sent < n_requests and time.perf_counter() - start < max_seconds:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/rerank", content=body, headers=headers)
                    ok = r.status_code == 200 and len(r.json()["results"]) > 0
                    key = "ok" if ok else str(r.status_code)
                except httpx.HTTPError as err:
                    key = type(err).__name__
                if key == "ok":
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "concurrency": concurrency,
        "requests_ok": len(latencies),
        "errors": errors,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a BEIR folder with a BM25 run (default: shared DL 2019)")
    ap.add_argument("--depth", type=int, default=100, help="documents per request")
    ap.add_argument("--concurrency", default="1,8", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=24, help="requests per server and concurrency (a bound)")
    ap.add_argument("--max-seconds", type=float, default=120, help="time limit per server and concurrency")
    ap.add_argument("--modes", default=",".join(MODES), help=f"servers to compare: {', '.join(MODES)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_server is not None:
        run_naive_server(args.naive_server)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    levels = [int(c) for c in args.concurrency.split(",")]
    sys.path.insert(0, str(ROOT / "bench"))
    from rerank_speed import machine  # the machine facts every bench records

    before = machine()
    requests = load_requests(args.data, args.depth)
    bodies = [json.dumps({"query": q, "documents": d}).encode() for q, d in requests]
    print(f"{len(requests)} queries x {args.depth} documents; {os.cpu_count()} CPUs; loopback only", flush=True)

    library = library_pairs_per_second(requests, max(levels))
    print(
        f"library in-process: {library['rerank_many']:.1f} pairs/s (rerank_many of {max(levels)} requests), "
        f"{library['rerank_per_request']:.1f} pairs/s (rerank per request)",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    log_dir = ROOT / "bench" / ".work"
    log_dir.mkdir(parents=True, exist_ok=True)
    for mode in modes:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(mode, port, log_dir / f"serve_{mode}.log")
        try:
            wait_ready(base, proc)
            asyncio.run(load(base, bodies, 2, 2, 60))  # warm up connections and the engine
            for c in levels:
                row = asyncio.run(load(base, bodies, c, args.requests, args.max_seconds))
                row["mode"] = mode
                row["pairs_per_s"] = row["requests_per_s"] * args.depth
                results.append(row)
                print(
                    f"{mode:12s} c={c:<3d} {row['requests_ok']:4d} ok  errors={row['errors'] or 0}  "
                    f"{row['requests_per_s']:6.2f} req/s  {row['pairs_per_s']:7.1f} pairs/s  "
                    f"p50 {row['p50_ms']:7.0f} ms  p99 {row['p99_ms']:7.0f} ms",
                    flush=True,
                )
        finally:
            stop_server(proc)

    print("\nratios")
    by = {(r["mode"], r["concurrency"]): r for r in results}
    for c in levels:
        best = by.get(("batching", c))
        if best is None:
            continue
        for other in ("no-batching", "naive"):
            if (other, c) in by:
                ratio = best["requests_per_s"] / by[(other, c)]["requests_per_s"]
                print(f"  c={c}: batching / {other} throughput = {ratio:.2f}x")
        print(f"  c={c}: batching pairs/s / library rerank_many = {best['pairs_per_s'] / library['rerank_many']:.2f}")
        print(
            f"  c={c}: batching pairs/s / library rerank per request = "
            f"{best['pairs_per_s'] / library['rerank_per_request']:.2f}"
        )
    if args.json:
        facts = {**before, "loadavg_1min_after": os.getloadavg()[0]}
        out = {"command": "python " + " ".join(sys.argv), "machine": facts, "library": library, "runs": results}
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
