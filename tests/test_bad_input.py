"""Bad input gets a clear error that names the item, what is wrong and how to fix it."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from crossrank import CrossEncoder, InputError, MissingDependencyError, ModelError, ModelNotFoundError
from crossrank.io import read_jsonl


@pytest.mark.parametrize(
    ("pairs", "fragment"),
    [
        ([("", "doc")], r"pairs\[0\]\[0\] \(the query\) is empty"),
        ([("q", "   ")], r"pairs\[0\]\[1\] \(the document\) is empty"),
        ([("q", None)], r"pairs\[0\]\[1\] \(the document\) must be a str \(got NoneType None\)"),
        ([("q", 5)], r"must be a str \(got int 5\)"),
        ([("q", "a", "b")], r"pairs\[0\] must be a \(query, document\) pair"),
        ("just a string", r"pairs must be a list of \(query, document\) pairs"),
        (None, r"pairs must be a list"),
    ],
)
def test_score_rejects_bad_pairs(default_model: CrossEncoder, pairs: object, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        default_model.score(pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "docs", "fragment"),
    [
        ("", ["doc"], r"query is empty"),
        (None, ["doc"], r"query must be a str \(got NoneType"),
        ("q", ["fine", ""], r"documents\[1\] is empty"),
        ("q", ["fine", None], r"documents\[1\] must be a str or a record with a 'text' field \(got NoneType"),
        ("q", ["fine", 3.5], r"documents\[1\] must be a str or a record .*got float 3.5"),
        ("q", [{"id": "a"}], r"documents\[0\] needs a 'text' str field"),
        ("q", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], r"documents\[1\] repeats doc id 'a'"),
    ],
)
def test_rerank_rejects_bad_documents(
    default_model: CrossEncoder, query: object, docs: list[object], fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        default_model.rerank(query, docs)  # type: ignore[arg-type]


def test_a_1mb_document_is_truncated_and_reported(
    default_model: CrossEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    huge = ("cats are mammals and " * 50_000)[:1_000_000]
    ranking = default_model.rerank("what is a cat", [huge, "A cat is a feline."])
    assert ranking.num_truncated == 1
    assert [h.truncated for h in sorted(ranking.hits, key=lambda h: h.index)] == [True, False]
    assert "1 of 2 pairs were truncated to max_length=512" in caplog.text


def test_a_query_too_long_for_max_length_is_named(default_model: CrossEncoder) -> None:
    with pytest.raises(InputError, match=r"tokens, leaving no room for the document within max_length=512"):
        default_model.score([("word " * 600, "doc")])


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"query": "a", "document": "b"}\n{"query": "a", \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2 is not valid JSON"):
        list(read_jsonl(bad_json))
    bad_utf8 = tmp_path / "latin1.jsonl"
    bad_utf8.write_bytes(b'{"query": "a", "document": "b"}\n{"query": "caf\xe9", "document": "b"}\n')
    with pytest.raises(InputError, match=r"latin1.jsonl:2 is not valid UTF-8 .*re-save the file as UTF-8"):
        list(read_jsonl(bad_utf8))


def test_unknown_model_lists_the_builtins() -> None:
    with pytest.raises(
        ModelNotFoundError,
        match=r"no model called 'nope': it is not a built-in "
        r"\(ms-marco-MiniLM-L-12-v2, crossrank-fast, bge-small-en, .*default",
    ):
        CrossEncoder("nope")


def _load_from_hub(endpoint: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """Load a hub id in a fresh process whose hub client talks to ``endpoint`` only (never the real hub)."""
    code = (
        "from crossrank import CrossEncoder\n"
        "try:\n    CrossEncoder('cross-encoder/ms-marco-MiniLM-L-6-v2')\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HOME=str(cache / "home"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_hub_id_unreachable_fails_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _load_from_hub(f"http://127.0.0.1:{port}", tmp_path)
    assert res.stdout.startswith("ModelNotFoundError could not download 'cross-encoder/ms-marco-MiniLM-L-6-v2'"), (
        res.stdout + res.stderr
    )
    assert "connect to the internet, or pass a local model folder" in res.stdout


def test_hub_id_the_hub_does_not_know_is_named(tmp_path: Path) -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        res = _load_from_hub(f"http://127.0.0.1:{server.server_address[1]}", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert res.stdout.startswith(
        "ModelNotFoundError no model 'cross-encoder/ms-marco-MiniLM-L-6-v2' on the Hugging Face hub"
    ), res.stdout + res.stderr


def test_folder_missing_its_tokenizer(fp32_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(fp32_folder, broken)
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (broken / f).unlink()
    with pytest.raises(ModelError, match=r"is missing its tokenizer .*tokenizer.save_pretrained"):
        CrossEncoder(broken, backend="torch")


def test_folder_with_slow_tokenizer_only_gets_a_fast_one(fp32_folder: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow-only"
    shutil.copytree(fp32_folder, slow)
    (slow / "tokenizer.json").unlink()
    ce = CrossEncoder(slow, backend="torch")
    assert (slow / "tokenizer.json").is_file()
    assert ce.score([("what is a cat", "A cat is a feline.")])[0] > 0.9


def test_broken_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelError, match=r"cannot read tokenizer .*tokenizer.json"):
        CrossEncoder(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"holds no model: expected model.onnx"):
        CrossEncoder(empty)


def test_missing_extra_names_the_install_command(fp32_folder: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from crossrank import CrossEncoder, MissingDependencyError\n"
        f"try:\n    CrossEncoder({str(fp32_folder)!r}, backend='torch')\n"
        "except MissingDependencyError as e:\n    print('MDE', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MDE backend 'torch' needs torch, which is not installed: pip install \"crossrank[torch]\"" in out.stdout
    assert issubclass(MissingDependencyError, ImportError)


def _cli(*args: str, env_block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = "import sys; sys.modules['torch'] = None; " if env_block_torch else "import sys; "
    code = prefix + "from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["rerank", "", "doc"], "query is empty"),
        (["rerank", "q", "fine", "  "], "documents[1] is empty"),
        (["rerank", "q", "doc", "--model", "nope"], "no model called 'nope'"),
        (["rerank", "q"], "no documents to rerank"),
        (
            ["rerank", "--corpus", "c.jsonl"],
            "batch mode needs --output and either all of --corpus, --queries, --run, or --pairs",
        ),
        (["score", "missing.jsonl"], "cannot open missing.jsonl"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args: list[str], fragment: str) -> None:
    out = _cli(*args)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr + out.stdout


def test_cli_bad_jsonl_and_missing_extra(tmp_path: Path, fp32_folder: Path) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_bytes(b'{"query": "q", "document": "d"}\n{"query": "q", "document": "\xff"}\n')
    out = _cli("score", str(bad))
    assert out.returncode == 2 and "pairs.jsonl:2 is not valid UTF-8" in out.stderr and "Traceback" not in out.stderr
    bad.write_text('{"query": "q", "document": "d"}\nnot json\n', encoding="utf-8")
    out = _cli("score", str(bad))
    assert out.returncode == 2 and "pairs.jsonl:2 is not valid JSON" in out.stderr
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "q", "document": "d"}) + "\n", encoding="utf-8")
    out = _cli("score", str(good), "--model", str(fp32_folder), "--backend", "torch", env_block_torch=True)
    assert out.returncode == 2 and 'pip install "crossrank[torch]"' in out.stderr and "Traceback" not in out.stderr
