"""The sampled request log of `crossrank serve` and `crossrank monitor report` over it.

A real server process over 300 real CISI abstracts logs real search and rerank requests with
texts hashed; the log is then read back and turned into the label-free report. The log's own
guarantees (off by default, never waiting on the disk, rotation, refusing a bad folder at start-up)
are checked on the class itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from browser import serve_process
from conftest import beir
from crossrank.errors import ConfigError, InputError
from crossrank.evaluate.log_report import read_request_log
from crossrank.serve.requestlog import RequestLog, redact

CODE = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"


def crossrank(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_a_server_logs_hashed_requests_and_the_report_reads_them(cisi_slice: Path, tmp_path: Path) -> None:
    from crossrank.retrieve.index import Index

    Index.build(tmp_path / "index", cisi_slice, retriever="bm25")
    queries = [json.loads(line)["text"] for line in (beir("cisi") / "queries.jsonl").read_text().splitlines()[:12]]
    logs = tmp_path / "logs"
    args = ["--index", str(tmp_path / "index"), "--request-log", str(logs), "--log-sample", "1", "--log-texts", "hash"]
    with serve_process(args, tmp_path / "serve.log") as base, httpx.Client(timeout=120) as http:
        for q in queries:
            assert http.post(f"{base}/v1/search", json={"query": q, "k": 5, "depth": 20}).status_code == 200
        docs = ["a library catalogue of books", "indexing by subject headings", "the weather in spring"]
        body = {"model": "default", "query": "library indexing", "documents": docs}
        assert http.post(f"{base}/v2/rerank", json=body).status_code == 200

    records = read_request_log(logs)
    assert len(records) == len(queries) + 1  # sample 1: every request, written before the server stopped
    search, rerank = records[0], records[-1]
    assert search["endpoint"] == "/v1/search" and rerank["endpoint"] == "/v2/rerank"
    assert search["query"] == "sha256:" + hashlib.sha256(queries[0].encode()).hexdigest()
    assert queries[0] not in (logs / "requests.jsonl").read_text()  # no text in the clear
    assert sorted(search["reranked"]) == sorted(search["first_stage"]) and len(search["scores"]) == 5
    assert set(search["signals"]) >= {"kendall_tau", "top_score", "margin", "score_std"}
    assert rerank["documents"][0].startswith("sha256:") and len(rerank["reranked"]) == 3
    assert set(rerank["timings_ms"]) == {"queue", "tokenize", "inference"}

    res = crossrank("monitor", "report", logs, "--html", tmp_path / "report.html", "--json", tmp_path / "report.json")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["records"] == len(records) and summary["verdict"]["verdict"] in (
        "helping",
        "unclear",
        "likely hurting",
    )
    page = (tmp_path / "report.html").read_text()
    assert "id='fig-signals'" in page and "data:image/png;base64," in page and "reordered most" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    bad = crossrank("monitor", "report", tmp_path / "nowhere", "--html", tmp_path / "x.html")
    assert bad.returncode != 0 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_the_log_is_off_by_default(default_model: object) -> None:
    from crossrank.serve import create_app

    app = create_app(default_model)  # type: ignore[arg-type]
    assert app.state.crossrank.request_log is None


def test_a_full_queue_drops_the_record_not_the_request(tmp_path: Path) -> None:
    rl = RequestLog(tmp_path, queue_size=2)
    rl.close()  # the writer has stopped: nothing drains the queue any more
    assert rl.offer({"signals": {}}) and rl.offer({"signals": {}})
    assert not rl.offer({"signals": {}})  # put_nowait: refused at once, counted
    assert rl.dropped == 1


def test_the_log_rotates_and_is_read_back_in_order(tmp_path: Path) -> None:
    rl = RequestLog(tmp_path, max_bytes=1024, keep=2)
    for i in range(60):
        rl.offer({"n": i, "signals": {}, "pad": "x" * 40})
    rl.close()
    names = sorted(p.name for p in tmp_path.glob("requests*.jsonl"))
    assert names == ["requests.1.jsonl", "requests.2.jsonl", "requests.jsonl"]
    assert all(p.stat().st_size < 1024 + 200 for p in tmp_path.glob("requests*.jsonl"))
    got = [r["n"] for r in read_request_log(tmp_path)]
    assert got == sorted(got) and got[-1] == 59 and len(got) < 60  # the oldest rotated out


def test_a_bad_folder_or_a_full_disk_is_refused_at_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the request log"):
        RequestLog(blocker / "logs")
    with pytest.raises(ConfigError, match="MB free, under the"):
        RequestLog(tmp_path / "logs", min_free_bytes=1 << 60)
    with pytest.raises(ConfigError, match="sample must be within"):
        RequestLog(tmp_path / "logs", sample=0)
    res = crossrank("serve", "--request-log", blocker / "logs", "--port", "0")
    assert res.returncode != 0 and "cannot write the request log" in res.stderr and "Traceback" not in res.stderr
    res = crossrank("serve", "--request-log", tmp_path / "ok", "--log-texts", "plain")
    assert res.returncode != 0 and "--log-texts must be one of full, hash, drop" in res.stderr


def test_texts_are_kept_hashed_or_dropped() -> None:
    assert redact("tea", "full") == "tea"
    assert redact("tea", "hash") == "sha256:" + hashlib.sha256(b"tea").hexdigest()
    assert redact("tea", "drop") is None
    with pytest.raises(InputError, match="not a JSON record"):
        bad = Path(os.environ.get("TMPDIR", "/tmp")) / f"crossrank-bad-log-{os.getpid()}.jsonl"
        bad.write_text("not json\n")
        try:
            read_request_log(bad)
        finally:
            bad.unlink()
