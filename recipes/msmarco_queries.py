"""Fetch the MS MARCO passage dev queries (web-search queries) for recipes/fast-msmarco.toml.

    python recipes/msmarco_queries.py [--output runs/msmarco-dev-queries] [--wheel PATH]

The 6,980 queries of the MS MARCO passage "dev subset" come from the Anserini topics bundled in
the `pyserini==0.21.0` wheel on PyPI (inside its Anserini fat jar, `topics-and-qrels/`); `pip
download` fetches the wheel, whose sha256 and the topic file's are checked. They are written as a
BEIR queries file (`queries.jsonl`, no corpus: the recipe takes their candidates from the TREC DL
2021 passage pool). Any query whose text is also a TREC DL 2019 query is dropped (none is: DL 2019
was drawn from the MS MARCO eval set, not dev), so the fast model never trains on what it is measured on.

Only the queries are used, without their judgments: the teacher's scores are the targets. MS MARCO
is released for non-commercial research; see https://microsoft.github.io/msmarco/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "pyserini-0.21.0-py3-none-any.whl"
WHEEL_SHA256 = "695c7e3f28d1a5b8689bf2cbe8f9ffab63c28a179fe9f8ceeeaa8494100eb93f"
JAR = "pyserini/resources/jars/anserini-0.21.0-fatjar.jar"
TOPICS = "topics-and-qrels/topics.msmarco-passage.dev-subset.txt"
TOPICS_SHA256 = "f4f71fa87b6be4fb968cca2b8f8554c4ebd003e6c3488af3ac1cc5629c3de189"
DL19 = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage" / "queries.jsonl"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(folder: Path) -> Path:
    """Download the pinned wheel into ``folder`` (no dependencies) and return its path."""
    wheel = folder / WHEEL
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "pyserini==0.21.0", "--no-deps", "--only-binary=:all:"]
        cmd += ["-d", str(folder)]
        print("fetching", WHEEL, "(154 MB) with:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return wheel


def read_topics(wheel: Path) -> list[tuple[str, str]]:
    """Return ``(id, text)`` of the dev-subset queries inside the wheel, after checking both hashes."""
    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest.hexdigest()} is not the pinned {WHEEL_SHA256}; delete it, run again")
    with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(io.BytesIO(whl.read(JAR))) as jar:
        raw = jar.read(TOPICS)
    if _sha256(raw) != TOPICS_SHA256:
        raise SystemExit(f"{TOPICS} in {wheel}: unexpected sha256 {_sha256(raw)}")
    rows = []
    for line in raw.decode("utf-8").splitlines():
        qid, _, text = line.partition("\t")
        if qid and text.strip():
            rows.append((qid.strip(), " ".join(text.split())))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=ROOT / "runs" / "msmarco-dev-queries")
    ap.add_argument("--wheel", type=Path, default=None, help="an already downloaded pyserini-0.21.0 wheel")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="crossrank-msmarco-") as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        rows = read_topics(wheel)
    held_out: set[str] = set()
    if DL19.is_file():
        held_out = {" ".join(json.loads(line)["text"].lower().split()) for line in DL19.open(encoding="utf-8")}
    kept = [(q, t) for q, t in rows if t.lower() not in held_out]
    args.output.mkdir(parents=True, exist_ok=True)
    tmp_file = args.output / "queries.jsonl.tmp"
    with tmp_file.open("w", encoding="utf-8") as f:
        for qid, text in kept:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    os.replace(tmp_file, args.output / "queries.jsonl")
    checked = "checked against" if DL19.is_file() else "NOT checked (not found):"
    dropped = len(rows) - len(kept)
    print(f"wrote {len(kept)} queries to {args.output / 'queries.jsonl'}")
    print(f"{dropped} dropped as TREC DL 2019 queries; {checked} {DL19}")


if __name__ == "__main__":
    main()
