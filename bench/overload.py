"""``crossrank serve`` under overload: how many requests succeed, and how fast the rest are refused.

A real ``crossrank serve --timeout 15`` process on 127.0.0.1 (the default model) gets 64 clients at
once, each sending 3 Cohere v1 rerank requests of 100 documents one after another: a query of TREC
DL 2019 and its top 100 from one of the collection's first-stage runs (BM25, BM25+RM3, TAS-B,
SPLADE, ada-2), so no two requests are the same. That is about ten times what the server can
answer within the timeout.

Each client keeps one HTTP/1.1 connection open (opened before the start) and sends pre-encoded
requests on it, so the client process adds little CPU to what is measured on this shared machine.
It honours ``Retry-After``: after a 429 it waits that many seconds and sends the same request
again (at most ``--max-retries`` times). Every attempt is recorded: status, latency,
``Retry-After``. From the server's own ``/metrics`` come its measured rate (pairs scored over
seconds of model calls) and so its capacity within the timeout (requests of 100 documents that
rate can finish in 15 s), and the count of answers by status, to check that every request got
exactly one answer.

    python bench/overload.py                                  # this checkout
    python bench/overload.py --compare-commit 5b3b252 --json docs/bench-overload.json
    python bench/overload.py --clients 16 --requests 1 --timeout 5    # a quick look

Each run is bounded by ``--max-seconds``; an attempt still open then is reported as unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"
WORK = ROOT / "bench" / ".work"
RUNS = ("bm25", "bm25_rm3", "tasb", "splade_pp_ed", "openai_ada2")

sys.path.insert(0, str(ROOT / "bench"))
from rerank_speed import _checkout, machine  # noqa: E402  (the machine facts every bench records)

# ----------------------------------------------------------------------------- data


def load_bodies(data: Path, depth: int, n: int) -> list[bytes]:
    """Return ``n`` distinct request bodies: a query and its top ``depth`` passages from one run."""
    sys.path.insert(0, str(ROOT / "src"))
    from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run

    corpus = read_beir_corpus(data / "corpus.jsonl")
    queries = read_beir_queries(data / "queries.jsonl")
    bodies = []
    for name in RUNS:
        run_file = data / "runs" / f"{name}.top100.trec"
        if not run_file.is_file():
            continue
        for qid, cands in read_trec_run(run_file).items():
            docs = [corpus[d]["text"] for d, _ in cands[:depth] if d in corpus]
            if qid in queries and len(docs) == depth:
                bodies.append(json.dumps({"query": queries[qid], "documents": docs}).encode())
    bodies = list(dict.fromkeys(bodies))  # two runs may agree on a query's top 100
    if len(bodies) < n:
        sys.exit(f"only {len(bodies)} distinct requests of {depth} documents in {data}; ask for fewer")
    return bodies[:n]


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(src: Path, port: int, timeout: float, cache: str | None, log: Path) -> subprocess.Popen[bytes]:
    """Start ``crossrank serve`` from ``src`` (a checkout's src/ folder) on ``port``."""
    code = (
        "import sys; from crossrank.cli import serve_cmd; from crossrank.cli.app import main; "
        "sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    )
    env = dict(os.environ, PYTHONPATH=str(src))
    if cache:
        env["CROSSRANK_CACHE"] = cache
    cmd = [sys.executable, "-c", code, "serve", "--port", str(port), "--timeout", f"{timeout:g}", "--quiet"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_ready(base: str, proc: subprocess.Popen[bytes], seconds: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scrape(base: str) -> dict[str, float]:
    """Return the server's counters this bench reads, by Prometheus sample name and labels."""
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        m = re.fullmatch(r"(crossrank_[\w:]+)(\{.*\})? (\S+)", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


# ----------------------------------------------------------------------------- the load


class Connection:
    """One client's keep-alive HTTP/1.1 connection: pre-encoded requests, so the client adds little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """Send one request; return the status, the headers (lower-case names) and the body."""
        if self.writer is None or self.reader is None or self.reader.at_eof():
            await self.close()  # the server closes a connection idle longer than its keep-alive
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, data


async def overload(
    port: int, bodies: list[bytes], clients: int, per_client: int, max_retries: int, timeout: float, limit: float
) -> tuple[list[dict[str, Any]], float]:
    """Run every client at once; return one record per request (with its attempts) and the wall seconds."""
    records: list[dict[str, Any]] = []
    go = asyncio.Event()
    start = 0.0

    async def attempt(conn: Connection, body: bytes) -> dict[str, Any]:
        sent = time.perf_counter()
        try:
            # an answer later than the timeout plus a margin counts as none
            status_code, headers, data = await asyncio.wait_for(
                conn.request("POST", "/v1/rerank", body), timeout=timeout + 30
            )
            status: int | str = status_code
            if status_code == 200 and len(json.loads(data)["results"]) != 100:
                status = "short"
            retry_after = headers.get("retry-after")
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
            await conn.close()
            status, retry_after = type(err).__name__, None
        done = time.perf_counter()
        return {
            "sent_s": round(sent - start, 4),
            "status": status,
            "latency_ms": round((done - sent) * 1000, 2),
            "retry_after": int(retry_after) if retry_after and retry_after.isdigit() else None,
        }

    async def one_client(c: int, ready: asyncio.Event) -> None:
        conn = Connection("127.0.0.1", port)
        await conn.request("GET", "/health")  # open this client's connection before the start
        ready.set()
        await go.wait()
        try:
            for i in range(per_client):
                body = bodies[c * per_client + i]
                rec: dict[str, Any] = {"client": c, "request": i, "attempts": []}
                records.append(rec)
                while True:
                    a = await attempt(conn, body)
                    rec["attempts"].append(a)
                    honours = len(rec["attempts"]) - 1
                    if a["status"] != 429 or a["retry_after"] is None or honours >= max_retries:
                        break
                    await asyncio.sleep(a["retry_after"])
        finally:
            await conn.close()

    ready = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(one_client(c, ready[c])) for c in range(clients)]
    await asyncio.gather(*(e.wait() for e in ready))
    start = time.perf_counter()
    go.set()
    _, late = await asyncio.wait(tasks, timeout=limit)
    for t in late:
        t.cancel()
    wall = time.perf_counter() - start
    for rec in records:
        if rec["attempts"] and rec["attempts"][-1]["status"] == 429 and len(rec["attempts"]) <= max_retries:
            last = rec["attempts"][-1]
            if last["retry_after"] is not None and last["sent_s"] + last["retry_after"] > wall - 1:
                rec["cut_by_time_limit"] = True
    return records, wall


# ----------------------------------------------------------------------------- one system


def run_system(
    name: str, src: Path, cache: str | None, bodies: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    WORK.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(src, port, args.timeout, cache, WORK / f"overload_{name}.log")
    try:
        wait_ready(base, proc)
        # one request first, so the server has timed a model call on this traffic before the burst
        warm = httpx.post(
            f"{base}/v1/rerank", content=bodies[-1], headers={"content-type": "application/json"}, timeout=300
        )
        if warm.status_code != 200:
            sys.exit(f"{name}: the warm-up request got {warm.status_code}")
        before = scrape(base)
        loads: list[float] = []
        stop = threading.Event()

        def sample() -> None:  # the machine is shared: what else ran meanwhile shows in the load
            while not stop.wait(0 if not loads else 10):
                loads.append(round(os.getloadavg()[0], 2))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            records, wall = asyncio.run(
                overload(port, bodies, args.clients, args.requests, args.max_retries, args.timeout, args.max_seconds)
            )
        finally:
            stop.set()
            sampler.join()
        loads.append(round(os.getloadavg()[0], 2))
        if proc.poll() is not None:
            sys.exit(f"{name}: the server exited during the run (status {proc.returncode})")
        after = scrape(base)
    finally:
        stop_server(proc)
    return summarize(name, records, wall, before, after, loads, args)


def summarize(
    name: str,
    records: list[dict[str, Any]],
    wall: float,
    before: dict[str, float],
    after: dict[str, float],
    loads: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    depth = args.depth
    pairs = delta("crossrank_pairs_total")
    # the rate over every finished model call, the warm-up request's included (a server whose calls
    # all ran past the end of the run has no other)
    seconds = after.get("crossrank_inference_seconds_sum", 0.0)
    rate = after.get("crossrank_pairs_total", 0.0) / seconds if seconds > 0 else float("nan")
    capacity = math.floor(rate * args.timeout / depth) if rate == rate else 0
    attempts = [a for r in records for a in r["attempts"]]
    first = [r["attempts"][0] for r in records]
    final = [r["attempts"][-1] for r in records]
    refused = [a for a in attempts if a["status"] == 429]
    # the first wave: the request each client sent at the start, before any answer came back
    wave = [r["attempts"][0] for r in records if r["request"] == 0]
    # a refusal that was honoured: the client waited Retry-After and sent the same request again
    honoured = [
        (r["attempts"][i], r["attempts"][i + 1])
        for r in records
        for i in range(len(r["attempts"]) - 1)
        if r["attempts"][i]["status"] == 429
    ]
    ok_after_honour = sum(nxt["status"] == 200 for _, nxt in honoured)
    unanswered = [a for a in attempts if not isinstance(a["status"], int)]
    server_answers = {
        m.group(1): delta(k)
        for k in after
        if (m := re.fullmatch(r'crossrank_requests_total\{route="/v1/rerank",status="(\d+)"\}', k))
    }
    client_answers: dict[str, int] = {}
    for a in attempts:
        client_answers[str(a["status"])] = client_answers.get(str(a["status"]), 0) + 1
    succeeded = sum(a["status"] == 200 for a in final)
    lat429 = sorted(a["latency_ms"] for a in refused)
    # the first wave arrives at once: its refusals queue on the event loop behind each other's parsing
    wave429 = sorted(a["latency_ms"] for a in wave if a["status"] == 429)
    later429 = sorted(a["latency_ms"] for r in records for a in r["attempts"] if a["status"] == 429)
    for x in wave429:
        later429.remove(x)

    def pct(values: list[float], p: float) -> float | None:
        return values[min(len(values) - 1, round(p * (len(values) - 1)))] if values else None

    ok_pairs = sum(a["status"] == 200 for a in attempts) * depth
    # answered with 200 within the first timeout of the burst: what capacity could have answered then
    in_window = sum(a["status"] == 200 and a["sent_s"] + a["latency_ms"] / 1000 <= args.timeout for a in attempts)
    return {
        "system": name,
        "requests": len(records),
        "attempts": len(attempts),
        "seconds": round(wall, 1),
        "loadavg_1min_before": loads[0],
        "loadavg_1min_after": loads[-1],
        "loadavg_1min_max": max(loads),
        "loadavg_1min_every_10s": loads,
        "server_pairs_per_s": round(rate, 1),
        "capacity_requests_within_timeout": capacity,
        "first_attempt": _count(first),
        "final": _count(final),
        "first_wave": {"requests": len(wave), "ok": sum(a["status"] == 200 for a in wave)},
        "ok_within_timeout": in_window,
        "ok_within_timeout_share_of_capacity": round(in_window / capacity, 3) if capacity else None,
        "goodput_share_of_rate": round(ok_pairs / wall / rate, 3) if rate == rate and wall > 0 else None,
        "succeeded": succeeded,
        "refusals": len(refused),
        "refusal_ms": {"p50": pct(lat429, 0.5), "p99": pct(lat429, 0.99), "max": lat429[-1] if lat429 else None},
        "refusals_within_50ms": sum(x <= 50 for x in lat429),
        "first_wave_refusal_ms": {"p50": pct(wave429, 0.5), "max": wave429[-1] if wave429 else None},
        "later_refusal_ms": {
            "p50": pct(later429, 0.5),
            "p99": pct(later429, 0.99),
            "max": later429[-1] if later429 else None,
        },
        "retry_after_s": {
            "min": min((a["retry_after"] for a in refused if a["retry_after"] is not None), default=None),
            "max": max((a["retry_after"] for a in refused if a["retry_after"] is not None), default=None),
        },
        "honoured": len(honoured),
        "ok_after_honour": ok_after_honour,
        "ok_after_honour_share": round(ok_after_honour / len(honoured), 3) if honoured else None,
        "unanswered": len(unanswered),
        "answers_match_server": {k: v for k, v in sorted(client_answers.items())}
        == {k: int(v) for k, v in sorted(server_answers.items()) if v},
        "server_answers": {k: int(v) for k, v in sorted(server_answers.items()) if v},
        "pairs_scored": int(pairs),
        "pairs_for_answered_requests": ok_pairs,
        "wasted_pairs": int(pairs) - ok_pairs,
        "server": {
            k.removeprefix("crossrank_"): int(delta(k))
            for k in sorted(after)
            if k.startswith(("crossrank_admitted", "crossrank_expired", "crossrank_dropped", "crossrank_rejected"))
        },
        "records": records,
    }


def _count(attempts: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in attempts:
        out[str(a["status"])] = out.get(str(a["status"]), 0) + 1
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- report


def report(rows: list[dict[str, Any]], timeout: float, *, markdown: bool = False) -> None:
    """Print the side-by-side table: plain text, or a markdown table for the docs."""
    lines = [
        ("server's measured pairs/s", lambda r: f"{r['server_pairs_per_s']:.1f}"),
        (f"capacity within {timeout:g} s (requests)", lambda r: str(r["capacity_requests_within_timeout"])),
        ("first wave: 200 / sent", lambda r: f"{r['first_wave']['ok']} / {r['first_wave']['requests']}"),
        (
            f"200s within the first {timeout:g} s (share of capacity)",
            lambda r: f"{r['ok_within_timeout']} ({_fmt(r['ok_within_timeout_share_of_capacity'])})",
        ),
        ("first attempts by status", lambda r: _statuses(r["first_attempt"])),
        ("requests that got 200 in the end", lambda r: f"{r['succeeded']} / {r['requests']}"),
        ("429s answered within 50 ms", lambda r: f"{r['refusals_within_50ms']} / {r['refusals']}"),
        ("429 latency p50 / p99 / max ms", lambda r: _ms(r["refusal_ms"])),
        ("429 latency, first wave: p50 / max ms", lambda r: _ms(r.get("first_wave_refusal_ms"), ("p50", "max"))),
        ("429 latency, later: p50 / p99 / max ms", lambda r: _ms(r.get("later_refusal_ms"))),
        ("Retry-After min / max s", lambda r: f"{r['retry_after_s']['min']} / {r['retry_after_s']['max']}"),
        ("honoured Retry-After, then 200", lambda r: f"{r['ok_after_honour']} / {r['honoured']}"),
        ("attempts with no answer", lambda r: str(r["unanswered"])),
        ("client and server counts agree", lambda r: "yes" if r["answers_match_server"] else "NO"),
        ("pairs scored / for 200s", lambda r: f"{r['pairs_scored']} / {r['pairs_for_answered_requests']}"),
        ("200s' pairs/s / measured pairs/s", lambda r: _fmt(r["goodput_share_of_rate"])),
        ("wall seconds", lambda r: str(r["seconds"])),
        (
            "load: before / max / after",
            lambda r: f"{r['loadavg_1min_before']} / {r['loadavg_1min_max']} / {r['loadavg_1min_after']}",
        ),
    ]
    if markdown:
        print("| | " + " | ".join(r["system"] for r in rows) + " |")
        print("|---|" + "---|" * len(rows))
        for label, cell in lines:
            print(f"| {label.strip()} | " + " | ".join(cell(r) for r in rows) + " |")
        return
    width = max(len(label) for label, _ in lines)
    print()
    print(" " * width + "  " + "  ".join(f"{r['system']:>24}" for r in rows))
    for label, cell in lines:
        print(f"{label:<{width}}  " + "  ".join(f"{cell(r):>24}" for r in rows))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ms(d: dict[str, float | None] | None, keys: tuple[str, ...] = ("p50", "p99", "max")) -> str:
    if not d:
        return "-"
    return " / ".join("-" if d.get(k) is None else f"{d[k]:.0f}" for k in keys)


def _statuses(d: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in d.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder with runs/*.top100.trec")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    ap.add_argument("--depth", type=int, default=100, help="documents per request")
    ap.add_argument("--timeout", type=float, default=15.0, help="the server's --timeout")
    ap.add_argument("--max-retries", type=int, default=3, help="most times a client honours Retry-After per request")
    ap.add_argument("--max-seconds", type=float, default=1200, help="time limit of one run")
    ap.add_argument("--compare-commit", default=None, help="also run the server as of this git commit")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    ap.add_argument("--table", type=Path, default=None, help="only print the markdown table of a saved JSON")
    args = ap.parse_args()
    if args.table:
        saved = json.loads(args.table.read_text(encoding="utf-8"))
        report(saved["results"], saved["setup"]["timeout_s"], markdown=True)
        return
    bodies = load_bodies(args.data, args.depth, args.clients * args.requests + 1)
    info = machine()
    print(f"machine: {json.dumps(info)}", file=sys.stderr, flush=True)
    systems: list[tuple[str, Path, str | None]] = [("this checkout", ROOT / "src", None)]
    if args.compare_commit:
        tree = _checkout(args.compare_commit)
        cache = str(WORK / f"cache-{args.compare_commit.replace('/', '_')}")
        systems.insert(0, (f"commit {args.compare_commit}", tree / "src", cache))
    rows = []
    for name, src, cache in systems:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(run_system(name, src, cache, bodies, args))
    report(rows, args.timeout)
    if args.json:
        doc = {
            "command": "python bench/overload.py " + " ".join(sys.argv[1:]),
            "machine": {**info, "loadavg_1min_after": os.getloadavg()[0]},
            "setup": {
                "data": args.data.name,
                "clients": args.clients,
                "requests_per_client": args.requests,
                "documents_per_request": args.depth,
                "timeout_s": args.timeout,
                "max_retries": args.max_retries,
            },
            "results": rows,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
