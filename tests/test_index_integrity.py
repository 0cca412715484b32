"""A damaged index is refused in one line naming the file; writes never replace a good generation with a
bad one; readers racing a writer never see a false "damaged"; a served index follows its writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from crossrank import CrossEncoder
from crossrank.cli.app import app
from crossrank.retrieve.index import Index, IndexDamagedError, IndexError_
from crossrank.serve import ServeConfig, create_app
from test_serve import HTTP_TIMEOUT, serving


def _records(path: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line_error(result: Any, *needles: str) -> str:
    """Check a refused command: exit code 2, nothing on stdout, one line on stderr holding each needle."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return str(lines[0])


def _generations(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("gen-"))


@pytest.fixture(scope="module")
def small(cisi_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BM25 index of 12 CISI documents (one generation, one segment)."""
    folder = tmp_path_factory.mktemp("small") / "index"
    Index.build(folder, _records(cisi_slice, 12)).close()
    return folder


def test_a_wrong_length_live_file_is_refused_and_the_last_good_generation_survives(
    small: Path, cisi_slice: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "index"
    shutil.copytree(small, folder)
    more = _jsonl(tmp_path / "more.jsonl", _records(cisi_slice, 14)[12:])
    live = folder / "gen-000001" / "live.npy"
    good = live.read_bytes()
    opened_before = Index.open(folder)
    np.save(live, np.ones(10, bool))
    bad = live.read_bytes()

    with pytest.raises(IndexDamagedError, match=r"gen-000001/live\.npy has 10 slots.*hold 12 rows") as info:
        Index.open(folder)
    assert info.value.file == "gen-000001/live.npy"
    _one_line_error(_cli("search", "-i", str(folder), "library books", "--no-rerank"), "is damaged", "live.npy")
    _one_line_error(
        _cli("index", "add", "--corpus", str(more), "-i", str(folder), "--no-progress"), "is damaged", "live.npy"
    )
    # an index opened before the damage refuses to write over it too
    with pytest.raises(IndexDamagedError, match=r"live\.npy"):
        opened_before.add(more)
    opened_before.close()
    # nothing was written and nothing removed: the damaged file is still there, for a backup or a repair
    assert (folder / "CURRENT").read_text().strip() == "gen-000001" and _generations(folder) == ["gen-000001"]
    assert live.read_bytes() == bad and not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    verify = _cli("index", "verify", str(folder))
    assert verify.exit_code == 1 and "is damaged: 1 problem" in verify.stdout and "gen-000001/live.npy" in verify.stdout

    # a write whose new generation would not pass the open's checks is refused before CURRENT moves
    live.write_bytes(good)
    index = Index.open(folder)
    index.live = np.ones(10, bool)  # the state the write builds on is inconsistent
    with pytest.raises(IndexDamagedError, match=r"live\.npy has 10 slots"):
        index.delete([str(_records(cisi_slice, 1)[0]["_id"])])
    index.close()
    assert (folder / "CURRENT").read_text().strip() == "gen-000001" and _generations(folder) == ["gen-000001"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

    # repaired, the index verifies and takes writes again
    assert _cli("index", "verify", str(folder)).exit_code == 0
    added = _cli("index", "add", "--corpus", str(more), "-i", str(folder), "--no-progress")
    assert added.exit_code == 0 and json.loads(added.stdout)["documents"] == 14
    assert len(Index.open(folder)) == 14 and _generations(folder) == ["gen-000002"]


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # case: (the file named, how to damage it, what the message says)
    "manifest is a list": ("gen-000001/manifest.json", lambda f: f.write_text("[]"), "not an object"),
    "manifest lacks fields": ("gen-000001/manifest.json", lambda f: f.write_text('{"format": 1}'), "lacks"),
    "manifest not UTF-8": ("gen-000001/manifest.json", lambda f: f.write_bytes(b'{"format": 1, "x": "\xff"}'), "UTF-8"),
    "manifest not JSON": ("gen-000001/manifest.json", lambda f: _truncate(f), "not valid JSON"),
    "CURRENT not UTF-8": ("CURRENT", lambda f: f.write_bytes(b"gen-\xff\n"), "not UTF-8"),
    "CURRENT names no generation": ("CURRENT", lambda f: f.write_text("../../etc\n"), "names no generation"),
    "tokens.bin truncated": ("segments/seg-000001/tokens.bin", _truncate, "bytes where the segment's rows need"),
    "lengths.bin truncated": ("segments/seg-000001/lengths.bin", _truncate, "bytes where the segment's rows need"),
    "docs.sqlite garbage": ("segments/seg-000001/docs.sqlite", lambda f: f.write_bytes(b"\x13" * 8192), "cannot be"),
    "docs.sqlite truncated": ("segments/seg-000001/docs.sqlite", lambda f: _truncate(f, 0.3), "damaged"),
    "docs.sqlite missing": ("segments/seg-000001/docs.sqlite", lambda f: f.unlink(), "is missing"),
    "bm25_rows.npy wrong": ("gen-000001/bm25_rows.npy", lambda f: np.save(f, np.arange(12)[::-1].copy()), "live slots"),
    "vocab.json not JSON": ("gen-000001/vocab.json", lambda f: f.write_text("{"), "cannot be read"),
    "BM25 matrix truncated": ("gen-000001/bm25", lambda f: _truncate(f / "indices.csc.index.npy"), "cannot be read"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_every_damaged_file_gets_one_line_naming_it(case: str, small: Path, tmp_path: Path) -> None:
    file, damage, says = DAMAGE[case]
    folder = tmp_path / "index"
    shutil.copytree(small, folder)
    damage(folder / file)
    with pytest.raises(IndexDamagedError) as info:
        Index.open(folder)
    assert info.value.file == file and says in str(info.value) and "\n" not in str(info.value)
    _one_line_error(_cli("search", "-i", str(folder), "library books", "--no-rerank"), "is damaged", file)
    more = _jsonl(tmp_path / "more.jsonl", [{"id": "new", "text": "a new document about libraries"}])
    _one_line_error(_cli("index", "add", "--corpus", str(more), "-i", str(folder), "--no-progress"), file)
    _one_line_error(_cli("index", "delete", "-i", str(folder), "some-id"), file)
    if not file.endswith(("manifest.json", "CURRENT")):  # info reads only CURRENT and the manifest
        assert _cli("index", "info", "-i", str(folder)).exit_code == 0
    else:
        _one_line_error(_cli("index", "info", "-i", str(folder)), file)
    verify = _cli("index", "verify", str(folder))
    assert verify.exit_code == 1 and "Traceback" not in verify.output and file in verify.stdout
    # the remedy the message names works: a rebuild over it
    corpus = _jsonl(tmp_path / "corpus.jsonl", [{"id": "a", "text": "library books"}, {"id": "b", "text": "other"}])
    rebuilt = _cli("index", "build", "--corpus", str(corpus), "-i", str(folder), "--overwrite", "--no-progress")
    assert rebuilt.exit_code == 0
    assert _cli("index", "verify", str(folder)).exit_code == 0 and len(Index.open(folder)) == 2


def test_damage_found_only_when_a_page_is_read_is_one_line_too(cisi_slice: Path, tmp_path: Path) -> None:
    """A damaged page in the middle of docs.sqlite passes the open's checks; reading it fails cleanly."""
    folder = tmp_path / "index"
    Index.build(folder, cisi_slice).close()
    db = folder / "segments" / "seg-000001" / "docs.sqlite"
    page = 4096
    data = bytearray(db.read_bytes())
    middle = (len(data) // page // 2) * page  # a leaf of the table, not its first or last one
    data[middle : middle + page] = b"\xab" * page
    db.write_bytes(bytes(data))
    index = Index.open(folder)  # the open reads the first and the last rows only
    with pytest.raises(IndexDamagedError, match=r"segments/seg-000001/docs\.sqlite cannot be read \(DatabaseError"):
        index.documents(np.arange(300))
    index.close()
    verify = _cli("index", "verify", "--index", str(folder))
    assert verify.exit_code == 1
    assert "segments/seg-000001/docs.sqlite fails SQLite's integrity check" in verify.stdout


def test_verify_reads_a_hybrid_index_and_names_damaged_vectors(hybrid_index: Index, tmp_path: Path) -> None:
    folder = tmp_path / "hybrid"
    shutil.copytree(hybrid_index.folder, folder)
    (folder / "gen-000099").mkdir()  # what a killed write leaves: reported, not damage
    ok = _cli("index", "verify", str(folder))
    assert ok.exit_code == 0, ok.output
    assert "is sound: generation gen-000001, 300 documents in 1 segment" in ok.stdout and "gen-000099" in ok.stdout
    vectors = folder / "segments" / "seg-000001" / "vectors.bin"
    data = bytearray(vectors.read_bytes())
    data[:4] = np.array([np.nan], np.float32).tobytes()  # the same size: only reading every vector finds it
    vectors.write_bytes(bytes(data))
    report = Index.verify(folder)
    assert report.problems == ["segments/seg-000001/vectors.bin holds values that are not finite numbers"]
    _truncate(vectors)
    with pytest.raises(IndexDamagedError, match=r"vectors\.bin has 230,400 bytes where the segment's rows need 460,"):
        Index.open(folder, dense_model=hybrid_index.encoder)


WRITER = """
import sys, pathlib
from crossrank.retrieve.index import Index
folder, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
index = Index.open(folder)
writes = 0
while not stop.exists():
    index.add([{"id": "extra", "text": "zeppelin airship mooring mast"}])
    index.delete(["extra"])
    writes += 2
    if writes % 10 == 0:
        index.compact()  # removes the old segments too
        writes += 1
print(writes, flush=True)
"""


def test_a_thousand_opens_during_writes_never_report_damage(cisi_slice: Path, tmp_path: Path) -> None:
    folder = tmp_path / "index"
    Index.build(folder, _records(cisi_slice, 40)).close()
    stop = tmp_path / "stop"
    command = [sys.executable, "-c", WRITER, str(folder), str(stop)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def read(n: int) -> None:
        for _ in range(n):
            try:
                index = Index.open(folder, threads=1)
            except IndexError_ as err:  # damaged, or any other refusal: none is expected
                with lock:
                    failures.append(str(err))
                continue
            try:
                assert len(index) in (40, 41)
                # the opened generation answers even after the writer removed its files
                assert len(index.documents(np.flatnonzero(index.live)[:3])) == 3
                with lock:
                    seen.add(index.generation)
            finally:
                index.close()

    try:
        while _generations(folder) == ["gen-000001"]:  # the writer has started writing
            assert writer.poll() is None, writer.communicate()[1]
            time.sleep(0.01)
        readers = [threading.Thread(target=read, args=(500,)) for _ in range(2)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert failures == []
    assert int(out) >= 10 and len(seen) >= 10  # the writes and the opens did overlap


def test_a_served_index_follows_deletes_and_adds(default_model: CrossEncoder, cisi_slice: Path, tmp_path: Path) -> None:
    folder = tmp_path / "index"
    records = _records(cisi_slice, 300)
    Index.build(folder, records).close()
    target = records[7]
    query = target["title"]
    gone_text = target["text"][:200]

    def search(base: str) -> httpx.Response:
        body = {"query": query, "k": 10, "depth": 20}
        return httpx.post(f"{base}/v1/search", json=body, timeout=HTTP_TIMEOUT)

    with serving(create_app(default_model, index=folder, config=ServeConfig(max_wait_ms=0))) as base:
        r = search(base)
        assert r.status_code == 200 and target["_id"] in [h["doc_id"] for h in r.json()["hits"]]
        writer = Index.open(folder)  # another process could do the same: the server shares nothing with it
        writer.delete([target["_id"]])
        r = search(base)  # the first search after the delete committed
        assert r.status_code == 200 and r.json()["hits"]
        assert target["_id"] not in [h["doc_id"] for h in r.json()["hits"]] and gone_text not in r.text
        models = httpx.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()
        assert models["data"][0]["search"]["documents"] == 299
        writer.add([{"id": "new-doc", "title": query, "text": target["text"]}])
        r = search(base)
        assert r.json()["hits"][0]["doc_id"] == "new-doc"

        # a new generation that fails its checks is never served, and nor is the replaced one
        writer.delete(["new-doc"])
        np.save(folder / writer.generation / "live.npy", np.ones(5, bool))
        r = search(base)
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["type"] == "unavailable" and f"{writer.generation}/live.npy" in error["message"]
        assert str(folder) not in r.text  # the client is not told where the files are
        writer.close()
        # the rerank routes go on, and the next search after a repair answers from the rebuilt index
        ok = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=HTTP_TIMEOUT)
        assert ok.status_code == 200
        Index.build(folder, records[:50], overwrite=True).close()
        r = search(base)
        assert r.status_code == 200 and {h["doc_id"] for h in r.json()["hits"]} <= {str(x["_id"]) for x in records[:50]}
