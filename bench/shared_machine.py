"""Is crossrank a good neighbour? The same pairs reranked idle, beside a busy loop, and beside itself.

Three conditions, each in fresh processes that load the model, report ready, and start timing
together on a signal:

1. idle: one crossrank process alone;
2. busy: one crossrank process beside a pure-Python busy loop (one core's worth of CPU-bound work);
3. two: two crossrank processes side by side.

Prints pairs/s and the ratio to idle for each process. crossrank sizes its threads from the cores
it may use (affinity mask and cgroup quota), so on a shared machine it degrades in proportion to
what the other work takes rather than collapsing from oversubscription.

    python bench/shared_machine.py                       # DL 2019, 10 queries x top-100
    python bench/shared_machine.py --json docs/bench-shared-machine.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"


def worker(args: argparse.Namespace) -> None:
    from crossrank import CrossEncoder
    from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run

    corpus = read_beir_corpus(args.data / "corpus.jsonl")
    queries = read_beir_queries(args.data / "queries.jsonl")
    run = read_trec_run(args.data / "runs" / "bm25.top100.trec")
    qids = [q for q in run if q in queries][: args.queries]
    texts = [queries[q] for q in qids]
    docs = [[corpus[d] for d, _ in run[q][: args.depth]] for q in qids]
    ce = CrossEncoder(args.model)
    ce.rerank(texts[0], docs[0][:8])  # warm
    print(json.dumps({"ready": True, "engine": ce.backend_name}), flush=True)
    sys.stdin.readline()  # the go signal: every process starts timing at once
    start = time.perf_counter()
    rankings = ce.rerank_many(texts, docs)
    seconds = time.perf_counter() - start
    pairs = sum(len(r) for r in rankings)
    print(json.dumps({"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}), flush=True)


def busy_loop() -> None:
    x = 0
    while True:  # one core's worth of CPU-bound Python work
        x = (x * 1103515245 + 12345) % 2147483648


def _start_workers(n: int, args: argparse.Namespace) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, __file__, "--worker", "--data", str(args.data), "--queries", str(args.queries)]
    cmd += ["--depth", str(args.depth), "--model", args.model]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout is not None
        line = json.loads(p.stdout.readline())
        assert line.get("ready"), line
    return procs


def condition(name: str, n: int, args: argparse.Namespace, *, busy: bool = False) -> list[dict[str, Any]]:
    procs = _start_workers(n, args)
    loop = subprocess.Popen([sys.executable, __file__, "--busy"]) if busy else None
    try:
        if loop is not None:
            time.sleep(1.0)  # the loop is running before timing starts
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            assert p.stdout is not None
            out.append({"condition": name, **json.loads(p.stdout.readline())})
            p.wait(timeout=60)
        return out
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--model", default="default")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.busy:
        busy_loop()
        return
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(ROOT / "src"))
    from crossrank.cpu import available_cores, cpu_flags

    machine = {
        "isa": sorted(cpu_flags()),
        "cores": available_cores(),
        "loadavg_1min": os.getloadavg()[0],
    }
    print(f"machine: {json.dumps(machine)}", file=sys.stderr, flush=True)
    rows = condition("idle", 1, args)
    rows += condition("beside a busy loop", 1, args, busy=True)
    rows += condition("two crossrank processes", 2, args)
    idle = rows[0]["pairs_per_s"]
    print(f"{args.data.name}, {args.queries} queries x top-{args.depth}, {machine['cores']} cores, {machine['isa']}")
    print(f"{'condition':<28} {'process':>7} {'pairs/s':>8} {'x idle':>7}")
    for i, r in enumerate(rows):
        r["x_idle"] = r["pairs_per_s"] / idle
        proc = i - 2 + 1 if r["condition"].startswith("two") else 1
        print(f"{r['condition']:<28} {proc:>7} {r['pairs_per_s']:>8.1f} {r['x_idle']:>7.2f}")
    if args.json:
        doc = {
            "command": "python bench/shared_machine.py " + " ".join(sys.argv[1:]),
            "machine": {**machine, "loadavg_1min_after": os.getloadavg()[0]},
            "results": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
