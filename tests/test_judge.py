"""The judge page: a person labels pooled results with the keyboard, in Debian's Chromium, against a real server.

``crossrank serve --index DIR --judge QRELS --judge-queries FILE`` runs as its own process over 300
real CISI abstracts. The browser judges three CISI queries with the keys alone, is closed half-way,
comes back, resumes where it stopped and finishes. The qrels file it leaves is then read by
``crossrank eval``, whose figures must equal those from the same grades written by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from browser import launched, serve_process
from conftest import beir
from crossrank.serve.judge import JudgeSession

CODE = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
QUERY_IDS = ["1", "3", "10"]  # CISI queries with judged documents among the first 300 abstracts
DEPTH = 2  # each stage's top 2: a pool of 2 to 4 documents per query
# the keys pressed, in order, whatever document is shown: every grade and a skip
KEYS = ["2", "0", "1", "s", "0", "2", "1", "0", "2", "0", "1", "0"]
GRADE = {"2": 2, "1": 1, "0": 0, "s": -1}


def crossrank(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def setup(cisi_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from crossrank.retrieve.index import Index

    folder = tmp_path_factory.mktemp("judge")
    Index.build(folder / "index", cisi_slice, retriever="bm25")
    queries = folder / "queries.jsonl"
    texts = {json.loads(line)["_id"]: line for line in (beir("cisi") / "queries.jsonl").read_text().splitlines()}
    queries.write_text("".join(texts[q] + "\n" for q in QUERY_IDS))
    return {"folder": folder, "index": folder / "index", "queries": queries, "qrels": folder / "judged.qrels"}


@pytest.fixture(scope="module")
def server(setup: dict[str, Path]) -> Iterator[str]:
    args = ["--index", str(setup["index"]), "--judge", str(setup["qrels"]), "--judge-queries", str(setup["queries"]),
            "--judge-depth", str(DEPTH), "--judge-name", "test judge"]  # fmt: skip
    with serve_process(args, setup["folder"] / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


def judged_count(base: str) -> int:
    return sum(q["judged"] for q in httpx.get(f"{base}/v1/judge", timeout=60).json()["queries"])


def shown(page: Page) -> tuple[str, str]:
    """The query id and document id on screen once the page has a document up."""
    page.wait_for_function("() => document.querySelector('#doc').dataset.docId", timeout=120_000)
    qid = page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('q')")
    return str(qid), str(page.get_attribute("#doc", "data-doc-id"))


def press(page: Page, base: str, key: str, done: list[tuple[str, str, int]]) -> None:
    """Grade what is shown with ``key``; wait until the server has it and the page moved on."""
    qid, doc = shown(page)
    before = judged_count(base)
    page.keyboard.press(key)
    deadline = time.monotonic() + 60
    while judged_count(base) != before + 1:
        assert time.monotonic() < deadline, f"the grade {key} of {doc} never reached the server"
        time.sleep(0.1)
    done.append((qid, doc, GRADE[key]))
    # the page shows another document (or the last query ends)
    page.wait_for_function(
        "([q, d]) => document.querySelector('#doc').dataset.docId !== d || !location.hash.includes(q)"
        " || /complete/.test(document.querySelector('#status').textContent)",
        arg=[qid, doc],
        timeout=60_000,
    )


def test_judging_with_the_keyboard_survives_a_reload_and_feeds_eval(
    setup: dict[str, Path], server: str, browser: Browser
) -> None:
    done: list[tuple[str, str, int]] = []
    shots = os.environ.get("CROSSRANK_PLAYGROUND_SHOTS")
    # first sitting: the first query and a little of the second, then the page is closed
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{server}/judge")
    first_query, _ = shown(page)
    assert first_query == QUERY_IDS[0]
    assert "test judge" in page.inner_text("#judge-name") and "judged.qrels" in page.inner_text("#judge-qrels")
    pool = httpx.post(f"{server}/v1/judge/pool", json={"query_id": first_query}, timeout=60).json()["documents"]
    assert 2 <= len(pool) <= 2 * DEPTH
    keys = iter(KEYS)
    for _ in pool:
        press(page, server, next(keys), done)
    press(page, server, next(keys), done)  # one document of the second query
    assert done[-1][0] == QUERY_IDS[1]
    if shots:
        page.screenshot(path=str(Path(shots) / "judge.png"), full_page=True)
    page.close()

    # second sitting: a new page resumes on the second query's first unjudged document
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{server}/judge")
    qid, doc = shown(page)
    assert qid == QUERY_IDS[1] and (qid, doc) not in {(q, d) for q, d, _ in done}
    assert "1 of 3 queries" in page.inner_text("#judge-progress-text")
    while len(done) < 30:
        state = httpx.get(f"{server}/v1/judge", timeout=60).json()
        if all(q["done"] for q in state["queries"]):
            break
        press(page, server, next(keys), done)
    page.wait_for_function("() => /complete/.test(document.querySelector('#status').textContent)", timeout=60_000)
    assert "3 of 3 queries" in page.inner_text("#judge-progress-text")
    page.close()

    # the qrels file holds exactly the grades given (a skip is left unjudged), and a sidecar says who and how
    graded = {(q, d): g for q, d, g in done}
    assert -1 in graded.values() and {2, 1, 0} <= set(graded.values())
    lines = sorted(setup["qrels"].read_text().splitlines())
    assert lines == sorted(f"{q} 0 {d} {g}" for (q, d), g in graded.items() if g >= 0)
    meta = json.loads(setup["qrels"].with_name("judged.qrels.judging.json").read_text())
    assert meta["pool_depth"] == DEPTH and meta["sessions"][0]["judge"] == "test judge"
    assert meta["judgments"] == len(done) and sum(len(v) for v in meta["skipped"].values()) == 1

    # crossrank eval reads it as it reads any qrels: the same figures as the grades written by hand
    run = setup["folder"] / "run.trec"
    res = crossrank("search", "--index", setup["index"], "--queries", setup["queries"], "--output", run, "--k", "10")
    assert res.returncode == 0, res.stderr
    hand = setup["folder"] / "hand.qrels"
    hand.write_text("".join(f"{q}\t0\t{d}\t{g}\n" for (q, d), g in graded.items() if g >= 0))
    figures = []
    for qrels in (setup["qrels"], hand):
        out = setup["folder"] / f"{qrels.name}.json"
        res = crossrank("eval", "--qrels", qrels, "--run", run, "--json", out)
        assert res.returncode == 0, res.stderr
        figures.append(json.loads(out.read_text()))
    assert figures[0] == figures[1]
    assert json.dumps(figures[0]).count("nDCG@10") >= 1


def test_the_session_refuses_what_it_cannot_keep(tmp_path: Path, setup: dict[str, Path], server: str) -> None:
    # an unwritable place fails at start-up, not at the first grade
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(Exception, match="cannot write the judgments"):
        JudgeSession(blocked / "judged.qrels", {"q": "text"})
    # bad requests get one-line errors in the API's shape
    r = httpx.post(f"{server}/v1/judge/judgment", json={"query_id": "1", "doc_id": "nope", "grade": 2}, timeout=60)
    assert r.status_code == 400 and "not in the pool" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/v1/judge/pool", json={"query_id": "unknown"}, timeout=60)
    assert r.status_code == 404 and "unknown query" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/v1/judge/judgment", json={"query_id": "1", "doc_id": "x", "grade": 5}, timeout=60)
    assert r.status_code == 400
    # a typed query joins the session with a stable id
    a = httpx.post(f"{server}/v1/judge/queries", json={"query": "library  automation"}, timeout=60).json()
    b = httpx.post(f"{server}/v1/judge/queries", json={"query": "library automation"}, timeout=60).json()
    assert a["id"] == b["id"] and a["id"].startswith("typed-") and a["total"] is None
    # a server started without --judge says how to turn it on
    bad = crossrank("serve", "--judge", tmp_path / "x.qrels")
    assert bad.returncode != 0 and "serve an --index" in bad.stderr and "Traceback" not in bad.stderr


def test_a_server_without_judging_answers_404_with_the_fix(default_model: Any, tmp_path: Path) -> None:
    from crossrank.serve import create_app
    from test_serve import serving

    with serving(create_app(default_model)) as base:
        r = httpx.get(f"{base}/v1/judge", timeout=60)
        assert r.status_code == 404 and "--judge" in r.json()["error"]["message"]
