"""Kill index writes with SIGKILL at random points: a reopened index is the old one, the new one, or a clear error."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import beir
from crossrank.retrieve.index import Index, IndexError_

QUERIES = ["computer programs for sorting", "parallel processing languages", "numerical integration error bounds"]

WRITER = """
import sys
from crossrank.retrieve.index import Index
mode, folder, corpus = sys.argv[1:4]
if mode == "build":
    Index.build(folder, corpus, overwrite=True, chunk_size=256)
elif mode == "compact":
    Index.open(folder).compact()
elif mode == "open":
    Index.open(folder).close()
else:
    Index.open(folder).add(corpus, on_conflict="replace", chunk_size=256)
print("done", flush=True)
"""


def _results(folder: Path) -> list[list[tuple[str, float]]]:
    index = Index.open(folder)
    try:
        return [
            list(zip(index.doc_ids(c.slots), [round(float(s), 4) for s in c.scores], strict=True))
            for c in index.retrieve(QUERIES, k=10)
        ]
    finally:
        index.close()


def _write(mode: str, folder: Path, corpus: Path, kill_after: float | None) -> bool:
    """Run a write in a subprocess; SIGKILL it after ``kill_after`` seconds. Return whether it finished."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode, str(folder), str(corpus)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is None:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return True
    try:
        proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return False
    return proc.returncode == 0


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of CACM: the old index holds the first half, a rebuild or an add brings the rest."""
    folder = tmp_path_factory.mktemp("crash-corpora")
    lines = (beir("cacm") / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    old = folder / "old.jsonl"
    old.write_text("\n".join(lines[:1600]) + "\n", encoding="utf-8")
    full = folder / "full.jsonl"
    full.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rest = folder / "rest.jsonl"
    rest.write_text("\n".join(lines[1600:]) + "\n", encoding="utf-8")
    return {"old": old, "full": full, "rest": rest}


@pytest.mark.parametrize("mode", ["build", "add"])
def test_sigkill_during_a_write_never_leaves_a_half_index(mode: str, corpora: dict[str, Path], tmp_path: Path) -> None:
    # the two legal outcomes: the index before the write, and the index after it
    before_dir, after_dir = tmp_path / "before", tmp_path / "after"
    _write("build", before_dir, corpora["old"], None)
    _write("build", after_dir, corpora["old"], None)
    started = time.perf_counter()
    _write(mode, after_dir, corpora["full"] if mode == "build" else corpora["rest"], None)
    full_time = time.perf_counter() - started
    before, after = _results(before_dir), _results(after_dir)
    assert before != after

    rng = random.Random(7)
    outcomes = []
    for trial in range(6):
        folder = tmp_path / f"trial{trial}"
        _write("build", folder, corpora["old"], None)
        finished = _write(
            mode, folder, corpora["full"] if mode == "build" else corpora["rest"], rng.uniform(0.2, full_time)
        )
        got = _results(folder)
        assert got in (before, after), f"trial {trial}: reopened index gives results that are neither old nor new"
        if finished:
            assert got == after
        outcomes.append("new" if got == after else "old")
        # the next write works and cleans up what the killed one left
        _write(mode, folder, corpora["full"] if mode == "build" else corpora["rest"], None)
        assert _results(folder) == after
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert "old" in outcomes  # the kills did land mid-write


def test_sigkill_during_a_first_build_gives_a_clear_error(corpora: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "first"
    started = time.perf_counter()
    _write("build", tmp_path / "timing", corpora["full"], None)
    full_time = time.perf_counter() - started
    rng = random.Random(11)
    errors = 0
    for _trial in range(4):
        if folder.exists():
            shutil.rmtree(folder)
        finished = _write("build", folder, corpora["full"], rng.uniform(0.2, full_time * 0.9))
        if finished:
            continue
        if not folder.exists():
            continue  # killed before the folder was made: nothing to open
        try:
            index = Index.open(folder)
        except IndexError_ as err:
            assert "interrupted" in str(err) or "not a crossrank index" in str(err)
            errors += 1
        else:  # killed after the commit: the index is complete
            assert len(index) == 3204
            index.close()
    assert errors >= 1
    # and the manifest of a completed build records what it holds
    manifest_dir = tmp_path / "timing"
    current = (manifest_dir / "CURRENT").read_text().strip()
    manifest = json.loads((manifest_dir / current / "manifest.json").read_text())
    assert manifest["counts"]["documents"] == 3204 and manifest["retriever"] == "bm25"


def test_sigkill_during_a_compaction_leaves_the_same_index(tmp_path: Path) -> None:
    # 45k real documents from four collections: enough for the compaction to be hit mid-way
    records = []
    for name in ("trec-dl-2019-passage", "trec-dl-2021-passage", "vaswani", "wikiqa"):
        for line in (beir(name) / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            record["_id"] = f"{name}/{record['_id']}"
            records.append(record)
    halves = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path, part in zip(halves, (records[:30000], records[30000:]), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    updated = tmp_path / "updated"  # three segments (build, add, upsert) and dead rows
    index = Index.build(updated, halves[0])
    index.add(halves[1])
    index.update([{"id": str(records[0]["_id"]), "text": "numerical integration error bounds for sorting programs"}])
    index.delete([str(r["_id"]) for r in records[1::7]])
    index.close()
    want = _results(updated)

    reference = tmp_path / "reference"
    shutil.copytree(updated, reference)
    started = time.perf_counter()
    _write("open", reference, reference, None)
    opened = time.perf_counter() - started  # the interpreter, the imports and the open
    started = time.perf_counter()
    _write("compact", reference, reference, None)
    full_time = time.perf_counter() - started
    assert _results(reference) == want and len(Index.open(reference).segments) == 1

    rng = random.Random(5)
    segments = []
    for trial in range(6):
        folder = tmp_path / f"trial{trial}"
        shutil.copytree(updated, folder)
        _write("compact", folder, folder, rng.uniform(opened, full_time))
        assert _results(folder) == want, f"trial {trial}: a killed compaction changed the results"
        index = Index.open(folder)
        segments.append(len(index.segments))
        index.close()
        _write("compact", folder, folder, None)  # the next one finishes and cleans up
        assert _results(folder) == want
        assert len(Index.open(folder).segments) == 1
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
        shutil.rmtree(folder)
    assert 3 in segments  # some kills landed before the commit


def test_the_next_write_removes_every_kind_of_leftover(corpora: dict[str, Path], tmp_path: Path) -> None:
    """Each kill window leaves something different; the random kills above reach the narrow ones only by chance."""
    folder = tmp_path / "index"
    Index.build(folder, corpora["old"])
    expected = _results(folder)
    leftovers = [
        folder / ".tmp-CURRENT-0123abcd",  # killed inside the atomic write of CURRENT: a file, not a folder
        folder / ".tmp-gen-0123456789ab",  # killed while a generation was written
        folder / ".tmp-seg-0123456789ab",  # killed while a segment was written
        folder / "gen-999999",  # a generation written but never made current
        folder / "segments" / "seg-999999",  # a segment no generation refers to
        folder / "segments" / "stray-file",
    ]

    def leave_debris() -> None:
        for p in leftovers:
            if p.name.startswith((".tmp-CURRENT", "stray")):
                p.write_text("gen-999999\n", encoding="utf-8")
            else:
                p.mkdir()
                (p / "part.bin").write_bytes(b"\0" * 16)

    def only_the_current_generation() -> bool:
        current = (folder / "CURRENT").read_text().strip()
        return [p.name for p in folder.iterdir() if p.name.startswith("gen-")] == [current]

    leave_debris()
    assert _results(folder) == expected  # a reader ignores them
    index = Index.open(folder)
    try:
        index.delete(["1"])
        assert not [p for p in leftovers if p.exists()] and only_the_current_generation()
        # a compaction with nothing to merge writes nothing, but it clears the debris too
        assert index.compact().purged == 1
        generation = index.generation
        leave_debris()
        assert index.compact().purged == 0 and index.generation == generation
        assert not [p for p in leftovers if p.exists()] and only_the_current_generation()
    finally:
        index.close()
