"""The command line in a new user's first minutes: the folders it takes, missing extras, flags, output."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

from crossrank import CrossEncoder, InputError
from crossrank._text import plural
from crossrank.evaluate.calibrate import Calibration, default_calibration_path, labelled_pairs
from crossrank.io import beir_qrels_path, check_run_ids, read_documents_jsonl, read_trec_run
from crossrank.models.source import resolve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "dl19"
RUN = EXAMPLES / "bm25.top100.trec"
DEPTH_ERROR = "depth must be >= k (got depth=5, k=10); raise depth or lower k"


def crossrank(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def too_wide(text: str, width: int = 80) -> list[str]:
    """Return the lines of ``text`` wider than ``width`` terminal cells."""
    return [line for line in text.splitlines() if cell_len(line) > width]


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.retrieve.index import Index

    folder = tmp_path_factory.mktemp("first-minutes") / "bm25"
    Index.build(folder, EXAMPLES / "corpus.jsonl", retriever="bm25")
    return folder


# ---------------------------------------------------------------- 1. calibrate takes eval's folders


def test_calibrate_takes_the_folders_eval_takes_and_says_how_to_undo_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a private cache: the calibration this test saves must never reach a shared one
    cache = tmp_path / "cache"
    env = {"CROSSRANK_CACHE": str(cache), "COLUMNS": "80"}
    monkeypatch.setenv("CROSSRANK_CACHE", str(cache))
    target = default_calibration_path(resolve("default"))
    assert target.is_relative_to(cache)

    assert beir_qrels_path(EXAMPLES) == EXAMPLES / "qrels.tsv"  # examples/dl19 has no qrels/ folder
    assert crossrank("eval", "--data", EXAMPLES, "--run", RUN).returncode == 0
    fit = labelled_pairs(EXAMPLES, RUN, depth=10, rel=1)
    assert len(fit) == 100 and 0 < int(fit.labels.sum()) < 100

    elsewhere = tmp_path / "platt.json"
    res = crossrank("calibrate", "--data", EXAMPLES, "--run", RUN, "--depth", "10", "--output", elsewhere, env=env)
    assert res.returncode == 0, res.stderr
    assert elsewhere.is_file() and not target.exists()
    assert f"saved the calibration to {elsewhere}; score and rerank do not use it" in res.stderr

    res = crossrank("calibrate", "--data", EXAMPLES, "--run", RUN, "--depth", "10", env=env)
    assert res.returncode == 0, res.stderr
    assert not too_wide(res.stdout) and "ECE before" in res.stdout and "…" not in res.stdout
    said = [line for line in res.stderr.splitlines() if line.startswith("from now on")]
    assert len(said) == 1, res.stderr
    assert "`crossrank score` and `crossrank rerank` with -m default" in said[0]
    assert "return calibrated probabilities" in said[0] and str(target) in said[0]
    assert said[0].endswith("undo with `crossrank calibrate --remove -m default`")
    cal = Calibration.load(target)
    assert cal.fitted_on["data"] == str(EXAMPLES) and cal.fitted_on["depth"] == 10

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "how long is life cycle of flea", "document": "Fleas live 2-3 months."}))
    logit = json.loads(crossrank("score", pairs, "--activation", "none", env=env).stdout)["score"]
    scored = crossrank("score", pairs, env=env)
    assert "note: scores are calibrated probabilities" in scored.stderr
    assert json.loads(scored.stdout)["score"] == pytest.approx(float(cal.apply([logit])[0]), abs=1e-5)

    gone = crossrank("calibrate", "--remove", "-m", "default", env=env)
    assert gone.returncode == 0 and not target.exists()
    assert gone.stderr.startswith(f"removed the calibration of default ({target})")
    plain = crossrank("score", pairs, env=env)
    assert "calibrated" not in plain.stderr
    assert json.loads(plain.stdout)["score"] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)
    again = crossrank("calibrate", "--remove", "-m", "default", env=env)
    assert again.returncode == 0 and "nothing to remove" in again.stderr

    res = crossrank("calibrate", "--data", EXAMPLES, env=env)
    assert res.returncode == 2 and res.stderr.startswith("error: calibrate needs --run:")
    res = crossrank("calibrate", "--remove", "--data", EXAMPLES, env=env)
    assert res.returncode == 2 and "--remove takes only -m MODEL (got --data)" in res.stderr


def test_a_folder_without_judgments_names_what_was_looked_for(tmp_path: Path, dl19: Path) -> None:
    assert beir_qrels_path(dl19) == dl19 / "qrels" / "test.tsv"
    with pytest.raises(InputError, match=r"no judgments in .* for split 'test': expected qrels/test\.tsv or qrels"):
        beir_qrels_path(tmp_path)
    with pytest.raises(InputError, match=r"split 'dev'.*splits there: test \(pass --split\)"):
        beir_qrels_path(dl19, "dev")


# ---------------------------------------------------------------- 2. serve without the serve extra


def _blocked(tmp_path: Path, *modules: str) -> dict[str, str]:
    """Return an environment where importing ``modules`` fails as if they were not installed."""
    stubs = tmp_path / "stubs"
    for name in modules:
        (stubs / name).mkdir(parents=True, exist_ok=True)
        (stubs / name / "__init__.py").write_text('raise ImportError("blocked for test")\n', encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(stubs), os.environ.get("PYTHONPATH", "")) if p)}


def test_serve_without_the_serve_extra_is_one_line_with_the_pip_command(tmp_path: Path) -> None:
    hint = 'which is not installed: pip install "crossrank[serve]"'
    res = crossrank("serve", "--port", "0", env=_blocked(tmp_path / "a", "fastapi", "uvicorn"))
    assert res.returncode == 2 and res.stderr.strip() == f"error: crossrank serve needs fastapi, {hint}"
    res = crossrank("serve", "--port", "0", env=_blocked(tmp_path / "b", "uvicorn"))
    assert res.returncode == 2 and res.stderr.strip() == f"error: crossrank serve needs uvicorn, {hint}"


def test_every_optional_module_names_its_extra(tmp_path: Path) -> None:
    extras = {
        "fastapi": "serve",
        "uvicorn": "serve",
        "prometheus_client": "serve",
        "openvino": "openvino",
        "nncf": "openvino",
        "sklearn": "eval",
        "scipy": "eval",
    }
    code = (
        "import sys\nfrom crossrank._deps import require\nfrom crossrank.errors import MissingDependencyError\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n        require(m, feature='this')\n"
        "    except MissingDependencyError as e:\n        print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *extras],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **_blocked(tmp_path, *extras)},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f'this needs {m}, which is not installed: pip install "crossrank[{extra}]"' for m, extra in extras.items()
    ]


# ---------------------------------------------------------------- 3. depth < k is refused everywhere


def test_search_refuses_a_depth_below_k_in_the_cli_the_library_and_the_server(
    bm25_index: Path, default_model: CrossEncoder
) -> None:
    from fastapi.testclient import TestClient

    from crossrank.pipeline import Pipeline
    from crossrank.serve import create_app

    query = "how long is life cycle of flea"
    res = crossrank("search", "--index", bm25_index, query, "--k", "10", "--depth", "5")
    assert res.returncode == 2 and res.stderr.strip() == f"error: {DEPTH_ERROR}"
    res = crossrank(
        "search", "--index", bm25_index, query, "--k", "10", "--depth", "5", "--no-rerank", "--format", "jsonl"
    )
    assert res.returncode == 0 and len(json.loads(res.stdout)["hits"]) == 10  # no rerank: depth plays no part

    pipe = Pipeline(bm25_index, reranker=default_model)
    with pytest.raises(InputError, match=re.escape(DEPTH_ERROR)):
        pipe.search(query, k=10, depth=5)
    with pytest.raises(InputError, match=re.escape(DEPTH_ERROR)):
        pipe.search_many([query], k=10, depth=5)
    ok = pipe.search(query, k=10, depth=10)
    assert len(ok.hits) == 10 and ok.depth == 10
    assert len(pipe.search(query, k=10, depth=5, rerank=False).hits) == 10

    with TestClient(create_app(default_model, index=bm25_index)) as client:
        r = client.post("/v1/search", json={"query": query, "k": 10, "depth": 5})
        assert r.status_code == 400 and r.json()["error"] == {"type": "invalid", "message": DEPTH_ERROR}
        r = client.post("/v1/search", json={"query": query, "k": 10, "depth": 5, "rerank": False})
        assert r.status_code == 200 and len(r.json()["hits"]) == 10
        r = client.post("/v1/search", json={"query": query, "k": 5, "depth": 5})
        assert r.status_code == 200 and r.json()["depth"] == 5 and len(r.json()["hits"]) == 5


# ---------------------------------------------------------------- 4. progress bars have a total


def test_index_progress_bars_count_to_a_known_total(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    res = crossrank("index", "build", "--corpus", EXAMPLES, "--index", idx)
    assert res.returncode == 0, res.stderr
    assert "/?" not in res.stderr
    assert re.search(r"indexing .* 1000/1000", res.stderr) and re.search(r"BM25 matrix .* 1000/1000", res.stderr)

    more = tmp_path / "more.jsonl"
    more.write_text(
        json.dumps({"id": "n1", "text": "a new passage about fleas"})
        + "\n\n"  # a blank line: counted by the quick line count, then the total is corrected
        + json.dumps({"id": "n2", "text": "another new passage"})
        + "\n"
        + json.dumps({"id": "bad"})  # no text: skipped with --skip-bad
        + "\n",
        encoding="utf-8",
    )
    res = crossrank("index", "add", "--corpus", more, "--index", idx, "--skip-bad")
    assert res.returncode == 0, res.stderr
    assert "/?" not in res.stderr and re.search(r"indexing .* 2/2", res.stderr), res.stderr
    assert re.search(r"BM25 matrix .* 1002/1002", res.stderr)


# ---------------------------------------------------------------- 5. one query, not "1 queries"


def test_counts_of_one_are_singular(tmp_path: Path, bm25_index: Path) -> None:
    assert [plural(n, "judged query") for n in (0, 1, 2)] == ["0 judged queries", "1 judged query", "2 judged queries"]
    assert (plural(1, "doc id"), plural(3, "doc id"), plural(2, "match"), plural(2, "day")) == (
        "1 doc id",
        "3 doc ids",
        "2 matches",
        "2 days",
    )
    assert plural(2, "run query", "run queries") == "2 run queries"

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n104861\t1017092\t2\n", encoding="utf-8")
    res = crossrank("eval", "--qrels", qrels, "--run", RUN)
    assert res.returncode == 0, res.stderr
    assert "1 judged query" in res.stdout and "queries" not in res.stdout

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "life cycle of a flea"}) + "\n", encoding="utf-8")
    out = tmp_path / "run.trec"
    res = crossrank("search", "--index", bm25_index, "--queries", queries, "--no-rerank", "--k", "3", "--output", out)
    assert res.returncode == 0, res.stderr
    assert f"wrote 3 lines for 1 query to {out}" in res.stderr

    run = read_trec_run(RUN)
    one = {"104861": run["104861"][:2]}
    corpus = {run["104861"][0][0]: {}}
    with pytest.raises(InputError, match=r"names 1 doc id not in corpus.jsonl \(first: "):
        check_run_ids(one, {"104861": "q"}, corpus, depth=2, skip_missing=False, where=(RUN, "q.jsonl", "corpus.jsonl"))


# ---------------------------------------------------------------- 6. tables in an 80-column terminal


def test_tables_stay_whole_in_80_columns(tmp_path: Path, bm25_index: Path) -> None:
    env = {"COLUMNS": "80"}
    long_name = tmp_path / "bm25_plus_a_rather_long_descriptive_run_name.top100.trec"
    lines = RUN.read_text(encoding="utf-8").splitlines()
    long_name.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # a second system: every third candidate of the first 300 lines promoted
    other = tmp_path / "other.trec"
    other.write_text(
        "".join(
            f"{q} Q0 {d} {r} {float(s) * (2 if int(r) % 3 == 0 else 1)} x\n"
            for q, _, d, r, s, _ in (line.split() for line in lines[:300])
        ),
        encoding="utf-8",
    )
    measures = "nDCG@10 RR@10 R@100 AP P@10 nDCG@100 R@1000"
    res = crossrank("eval", "--data", EXAMPLES, "--run", RUN, "--run", long_name, "--measures", measures, env=env)
    assert res.returncode == 0, res.stderr
    assert not too_wide(res.stdout) and "…" not in res.stdout
    assert res.stdout.count("0.5267") == 2  # nDCG@10 of both runs, whole

    res = crossrank(
        "compare", "--qrels", EXAMPLES / "qrels.tsv", "--run", RUN, "--run", other, "--run", long_name,
        "--measures", measures, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not too_wide(res.stdout) and "…" not in res.stdout, res.stdout
    assert re.search(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]", res.stdout)  # a confidence interval on one line

    res = crossrank("search", "--index", bm25_index, "how long is life cycle of flea", "--no-rerank", env=env)
    assert res.returncode == 0, res.stderr
    assert not too_wide(res.stdout) and "first stage" in res.stdout


# ---------------------------------------------------------------- 7. --documents: JSON strings too


def test_documents_jsonl_holds_strings_or_records(tmp_path: Path, default_model: CrossEncoder) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        '"A cat is a small feline."\n'
        "\n"
        + json.dumps({"_id": "p", "title": "Paris", "text": "Paris is the capital of France."})
        + "\n"
        + json.dumps({"id": "d", "text": "Dogs bark."})
        + "\n",
        encoding="utf-8",
    )
    got = list(read_documents_jsonl(docs))
    assert got == [
        "A cat is a small feline.",
        {"_id": "p", "title": "Paris", "text": "Paris is the capital of France.", "id": "p"},
        {"id": "d", "text": "Dogs bark."},
    ]
    ranking = default_model.rerank("what is a cat", got)
    assert ranking.hits[0].index == 0 and ranking.hits[0].doc_id == "0"
    assert {h.index: h.doc_id for h in ranking.hits}[1] == "p"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("42", "must be a JSON string or an object with 'text' (got int 42)"),
        ('["a", "b"]', "must be a JSON string or an object with 'text' (got list"),
        ('{"id": "x"}', "needs a 'text' string (got keys ['id'])"),
        ('{"id": "x", "text": 5}', "needs a 'text' string (got text of type int)"),
        ("a cat", "is not valid JSON"),
    ],
)
def test_documents_jsonl_names_the_bad_line(tmp_path: Path, line: str, fragment: str) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"fine"\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{docs}:2 ") + ".*" + re.escape(fragment)):
        list(read_documents_jsonl(docs))


def test_documents_jsonl_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot open .*missing\.jsonl"):
        list(read_documents_jsonl(tmp_path / "missing.jsonl"))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'"caf\xe9"\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl:1 is not valid UTF-8.*re-save the file as UTF-8"):
        list(read_documents_jsonl(latin1))


def test_the_new_docstring_examples_run() -> None:
    import doctest

    import crossrank._text
    import crossrank.io

    for module in (crossrank.io, crossrank._text):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
