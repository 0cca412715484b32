"""The index folder: persistence, add/update/delete, model checks, HNSW and int8, bad corpora."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank.errors import ConfigError, InputError
from crossrank.retrieve.corpus import read_corpus
from crossrank.retrieve.embed import BiEncoder
from crossrank.retrieve.index import Index, IndexError_, WriteReport, _WriteLock

QUERIES = [
    "the use of computers in libraries",
    "information retrieval evaluation of indexing languages",
    "citation analysis of scientific journals",
    "how do readers choose books in a public library",
]


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _ranked(index: Index, retriever: str, k: int = 20) -> list[list[tuple[str, float]]]:
    out = []
    for c in index.retrieve(QUERIES, k=k, retriever=retriever):  # type: ignore[arg-type]
        out.append(list(zip(index.doc_ids(c.slots), c.scores.tolist(), strict=True)))
    return out


def _assert_same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]], tol: float = 1e-5) -> None:
    for qa, qb in zip(a, b, strict=True):
        assert [d for d, _ in qa] == [d for d, _ in qb]
        np.testing.assert_allclose([s for _, s in qa], [s for _, s in qb], rtol=tol, atol=tol)


def test_reopened_index_gives_the_same_results(hybrid_index: Index) -> None:
    again = Index.open(hybrid_index.folder)
    assert len(again) == 300 and again.retrievers == ["bm25", "dense", "hybrid"]
    for retriever in ("bm25", "dense", "hybrid"):
        _assert_same(_ranked(hybrid_index, retriever), _ranked(again, retriever))
    info = again.info()
    assert info["counts"]["documents"] == 300
    assert info["bm25"]["k1"] == 0.9 and info["dense"]["fingerprint"]["model"] == "bge-small-en"
    assert {"bm25s", "usearch", "crossrank"} <= set(info["versions"])
    assert info["bytes_on_disk"] > 300 * 384 * 4


def test_add_then_update_then_delete_equals_a_fresh_build(
    hybrid_index: Index, cisi_slice: Path, tmp_path: Path
) -> None:
    records = _records(cisi_slice)
    enc = hybrid_index.encoder
    assert enc is not None
    first = _write(tmp_path / "first.jsonl", records[:200])
    rest = _write(tmp_path / "rest.jsonl", records[200:])
    grown = Index.build(tmp_path / "grown", first, retriever="hybrid", dense_model=enc)
    report = grown.add(rest)
    assert (report.added, report.replaced, len(grown)) == (100, 0, 300)
    # BM25 statistics are global: adding documents gives exactly the scores of building them all at once
    for retriever in ("bm25", "dense", "hybrid"):
        _assert_same(_ranked(grown, retriever), _ranked(hybrid_index, retriever))

    with pytest.raises(InputError, match="already in the index"):
        grown.add([{"id": records[0]["_id"], "text": "again"}])
    # update: the document's text changes, and the new text is what is found and returned
    target = str(records[5]["_id"])
    report = grown.update([{"id": target, "title": "", "text": "zeppelin airship mooring masts in rural libraries"}])
    assert (report.added, report.replaced, len(grown)) == (0, 1, 300)
    hit = grown.retrieve(["zeppelin airship mooring"], k=1, retriever="bm25")[0]
    assert grown.doc_ids(hit.slots) == [target]
    assert grown.get([target])[0]["text"].startswith("zeppelin")  # type: ignore[index]

    gone = [str(r["_id"]) for r in records[10:50]]  # not the updated one (records[5])
    with pytest.raises(InputError, match="not in the index"):
        grown.delete([*gone, "no-such-id"])
    assert len(grown) == 300  # nothing was deleted by the refused call
    assert grown.delete(gone).deleted == 40
    assert len(grown) == 260 and grown.info()["counts"]["deleted"] == 41  # 40 + the replaced version
    for retriever in ("bm25", "dense", "hybrid"):
        for c in grown.retrieve(QUERIES, k=300, retriever=retriever):  # type: ignore[arg-type]
            assert not set(grown.doc_ids(c.slots)) & set(gone)
    # and the result equals a fresh build of what is left
    left = [r for r in records[:10] + records[50:] if str(r["_id"]) != target]
    left.append({"_id": target, "title": "", "text": "zeppelin airship mooring masts in rural libraries"})
    fresh = Index.build(tmp_path / "fresh", _write(tmp_path / "left.jsonl", left), retriever="hybrid", dense_model=enc)
    for retriever in ("bm25", "dense"):
        _assert_same(_ranked(Index.open(grown.folder), retriever), _ranked(fresh, retriever))


def test_compact_merges_segments_and_drops_dead_rows_with_the_same_results(
    hybrid_index: Index, cisi_slice: Path, tmp_path: Path
) -> None:
    records = _records(cisi_slice)
    enc = hybrid_index.encoder
    first = _write(tmp_path / "a.jsonl", records[:150])
    index = Index.build(tmp_path / "idx", first, retriever="hybrid", dense_model=enc)
    index.add(_write(tmp_path / "b.jsonl", records[150:]))
    target = str(records[160]["_id"])
    index.update([{"id": target, "title": "", "text": "zeppelin airship mooring masts", "metadata": {"v": 2}}])
    gone = [str(r["_id"]) for r in records[20:60]]
    index.delete(gone)
    assert len(index.segments) == 3 and index.info()["counts"]["deleted"] == 41
    before = {r: _ranked(index, r, k=50) for r in ("bm25", "dense", "hybrid")}
    old_segments = [index.folder / "segments" / s.name for s in index.segments]
    size_before = index.info()["bytes_on_disk"]

    reader = Index.open(index.folder)  # opened before: keeps answering from the files it holds open
    report = index.compact()
    assert report.purged == 41 and report.to_dict()["purged"] == 41
    for retriever, want in before.items():
        _assert_same(_ranked(reader, retriever, k=50), want)
    with pytest.raises(IndexError_, match="changed since it was opened"):
        reader.delete([target])
    reader.close()
    assert len(index.segments) == 1 and len(index) == 260 and index.info()["counts"]["deleted"] == 0
    assert index.live.all() and index.live.size == 260
    assert not [p for p in old_segments if p.exists()]
    assert index.info()["bytes_on_disk"] < size_before
    # the same documents with the same scores, from this object and from a reopened index
    for reopened in (index, Index.open(index.folder)):
        for retriever, want in before.items():
            _assert_same(_ranked(reopened, retriever, k=50), want)
    assert index.get([target, gone[0]]) == [
        {"id": target, "title": "", "text": "zeppelin airship mooring masts", "metadata": {"v": 2}},
        None,
    ]
    # stored rows keep their slot order: the first stage's ties break the same way
    assert index.doc_ids(np.arange(3)) == [str(r["_id"]) for r in records[:3]]

    generation = index.generation
    assert index.compact().purged == 0 and index.generation == generation  # nothing to do: nothing written
    index.add([{"id": "new-1", "text": "zeppelin airship mooring"}])  # and writes go on from there
    assert index.doc_ids(index.retrieve(["zeppelin airship"], k=2, retriever="bm25")[0].slots) == ["new-1", target]


def test_compact_copies_int8_vectors_as_stored_and_rebuilds_the_hnsw_graph(
    hybrid_index: Index, cisi_slice: Path, tmp_path: Path
) -> None:
    records = _records(cisi_slice)
    enc = hybrid_index.encoder
    index = Index.build(
        tmp_path / "idx", _write(tmp_path / "a.jsonl", records[:200]), retriever="dense", dense_model=enc,
        dtype="int8", ann="hnsw",
    )  # fmt: skip
    index.add(_write(tmp_path / "b.jsonl", records[200:]))
    index.delete([str(r["_id"]) for r in records[:30]])
    before = _ranked(index, "dense", k=10)
    full = [dict(q) for q in _ranked(index, "dense", k=270)]
    index.compact()
    seg = index.folder / "segments" / index.segments[0].name
    assert index.segments[0].hnsw and (seg / "hnsw.usearch").is_file() and (seg / "scales.bin").is_file()
    assert (seg / "vectors.bin").stat().st_size == 270 * 384  # one byte per dimension: not re-quantized as float
    after = _ranked(index, "dense", k=10)
    overlap = np.mean([len({d for d, _ in a} & {d for d, _ in b}) / 10 for a, b in zip(after, before, strict=True)])
    assert overlap >= 0.9
    for q, scores in zip(after, full, strict=True):  # exact products with the stored int8 vectors, copied as they are
        np.testing.assert_allclose([s for _, s in q], [scores[d] for d, _ in q], rtol=1e-6, atol=1e-6)


def test_an_add_past_max_segments_merges_them_in_the_same_write(
    hybrid_index: Index, cisi_slice: Path, tmp_path: Path
) -> None:
    records = _records(cisi_slice)
    enc = hybrid_index.encoder
    first = _write(tmp_path / "a.jsonl", records[:100])
    index = Index.build(tmp_path / "idx", first, retriever="hybrid", dense_model=enc)
    gone = [str(r["_id"]) for r in records[10:15]]
    index.delete(gone)
    counts, purged = [], []
    for start in range(100, 160, 10):
        report = index.add(records[start : start + 10], max_segments=3)
        counts.append(len(index.segments))
        purged.append(report.purged)
        assert report.added == 10
    # a segment per add until a fourth would be needed; then one segment, without the dead rows
    assert counts == [2, 3, 1, 2, 3, 1] and purged == [0, 0, 5, 0, 0, 0]
    assert index.live.all() and len(index) == 155
    left = [r for r in records[:160] if str(r["_id"]) not in gone]
    fresh = Index.build(tmp_path / "fresh", _write(tmp_path / "left.jsonl", left), retriever="hybrid", dense_model=enc)
    for retriever in ("bm25", "dense", "hybrid"):
        _assert_same(_ranked(Index.open(index.folder), retriever), _ranked(fresh, retriever))
    # None never merges; nonsense is refused before anything is written
    for start in range(160, 200, 10):
        index.add(records[start : start + 10], max_segments=None)
    assert len(index.segments) == 5
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="max_segments"):
            index.add([{"id": "x", "text": "never added"}], max_segments=bad)  # type: ignore[arg-type]
    assert index.get(["x"]) == [None] and len(index.segments) == 5


def test_an_index_folder_may_have_any_name(tmp_path: Path) -> None:
    # SQLite reads its path as a URI: '#' and '?' once cut it short, and '%41' was read as 'A'
    folder = tmp_path / "odd #name? 100%41 ü" / "index"
    index = Index.build(folder, [{"id": "a", "text": "zeppelin airship"}, {"id": "b", "text": "library catalogue"}])
    assert [r["text"] for r in index.get(["a", "b"])] == ["zeppelin airship", "library catalogue"]  # type: ignore[index]
    index.add([{"id": "c", "text": "airship mooring mast"}])
    index.delete(["b"])
    assert index.compact().purged == 1
    reopened = Index.open(folder)
    assert sorted(reopened.doc_ids(reopened.retrieve(["airship"], k=2)[0].slots)) == ["a", "c"]
    assert [r and r["text"] for r in reopened.get(["b", "c"])] == [None, "airship mooring mast"]


def test_a_different_dense_model_is_refused(hybrid_index: Index) -> None:
    with pytest.raises(IndexError_, match="query_prompt"):
        Index.open(hybrid_index.folder, dense_model=BiEncoder("bge-small-en", query_prompt=""))
    with pytest.raises(IndexError_, match="all-MiniLM-L6-v2"):
        Index.open(hybrid_index.folder, dense_model="all-MiniLM-L6-v2")


def test_hnsw_recall_and_int8_vectors(hybrid_index: Index, cisi_slice: Path, tmp_path: Path) -> None:
    enc = hybrid_index.encoder
    hnsw = Index.build(tmp_path / "hnsw", cisi_slice, retriever="dense", dense_model=enc, ann="hnsw")
    assert hnsw.manifest["segments"][0]["hnsw"] is True
    exact = _ranked(hybrid_index, "dense", k=10)
    approx = _ranked(hnsw, "dense", k=10)
    recall = np.mean([len({d for d, _ in a} & {d for d, _ in e}) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    # scores of HNSW hits are exact dot products
    lookup = [dict(e) for e in _ranked(hybrid_index, "dense", k=300)]
    for a, full in zip(approx, lookup, strict=True):
        np.testing.assert_allclose([s for _, s in a], [full[d] for d, _ in a], atol=1e-5)

    small = Index.build(tmp_path / "int8", cisi_slice, retriever="dense", dense_model=enc, dtype="int8")
    quant = _ranked(small, "dense", k=10)
    overlap = np.mean([len({d for d, _ in q} & {d for d, _ in e}) / 10 for q, e in zip(quant, exact, strict=True)])
    assert overlap >= 0.9
    full_scores = [dict(e) for e in _ranked(hybrid_index, "dense", k=300)]
    for q, full in zip(quant, full_scores, strict=True):
        np.testing.assert_allclose([s for _, s in q], [full[d] for d, _ in q], atol=0.01)
    size = lambda i: sum(p.stat().st_size for p in i.folder.rglob("vectors.bin"))  # noqa: E731
    assert size(small) * 4 == size(hybrid_index)


def test_bad_corpus_records_raise_or_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [{"_id": f"d{i}", "title": "", "text": f"document number {i} about library science"} for i in range(5)]
    bad_lines = [
        json.dumps({"_id": "d1", "text": "a repeated id"}).encode(),
        json.dumps({"_id": "e1", "title": " ", "text": ""}).encode(),
        json.dumps({"_id": "e2", "title": "no text field"}).encode(),
        json.dumps({"text": "no id"}).encode(),
        b'{"_id": "e3", "text": "caf\xe9 in latin-1"}',
        b'{"_id": "e4", "text": ',
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join([json.dumps(r).encode() for r in good] + bad_lines) + b"\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:6: id 'd1' appears twice"):
        Index.build(tmp_path / "strict", path)
    assert not (tmp_path / "strict" / "CURRENT").exists()
    report = WriteReport()
    index = Index.build(tmp_path / "lenient", path, on_error="skip", report=report)
    assert len(index) == 5
    assert dict(report.corpus.skipped) == {
        "duplicate id": 1,
        "empty document": 1,
        "missing text": 1,
        "missing id": 1,
        "not UTF-8": 1,
        "invalid JSON": 1,
    }
    assert report.corpus.examples["not UTF-8"].endswith("corpus.jsonl:10")
    # the messages name the record and say how to fix it
    for line, pattern in [(7, "empty title and text"), (8, "no 'text' field"), (10, "not valid UTF-8")]:
        with pytest.raises(InputError, match=pattern):
            list(read_corpus(_slice(path, line, tmp_path)))


def _slice(path: Path, line: int, tmp_path: Path) -> Path:
    out = tmp_path / f"line{line}.jsonl"
    out.write_bytes(path.read_bytes().split(b"\n")[line - 1] + b"\n")
    return out


def test_misuse_gets_clear_errors(hybrid_index: Index, tmp_path: Path) -> None:
    with pytest.raises(IndexError_, match="does not exist"):
        Index.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexError_, match="not a crossrank index"):
        Index.open(tmp_path / "empty")
    with pytest.raises(IndexError_, match="already holds an index"):
        Index.build(hybrid_index.folder, [{"id": "x", "text": "y"}])
    with pytest.raises(InputError, match="no documents"):
        Index.build(tmp_path / "none", [])
    with pytest.raises(ConfigError, match="retriever"):
        Index.build(tmp_path / "bad", [{"id": "x", "text": "y"}], retriever="splade")  # type: ignore[arg-type]
    bm25_only = Index.build(tmp_path / "bm25", [{"id": "x", "text": "library"}, {"id": "z", "text": "books"}])
    with pytest.raises(ConfigError, match="cannot run retriever 'dense'"):
        bm25_only.retrieve(["library"], retriever="dense")
    with pytest.raises(InputError, match="list of queries"):
        bm25_only.retrieve("library")  # type: ignore[arg-type]
    assert len(bm25_only.retrieve(["unknownword"], k=5)[0]) == 0  # nothing shares a term: empty, not an error
    with _WriteLock(bm25_only.folder), pytest.raises(IndexError_, match="another process is writing"):
        bm25_only.add([{"id": "w", "text": "while locked"}])
    assert len(Index.open(bm25_only.folder)) == 2
