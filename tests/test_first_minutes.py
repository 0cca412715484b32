"""What a new user meets first: the cold cache, the engine picked for this CPU, the cores used, the CLI's basics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossrank import CrossEncoder
from crossrank.cpu import THREADS_ENV, available_cores, cgroup_cpu_limit, cpu_flags, int8_dot_product
from crossrank.engine import choose_backend
from crossrank.errors import ConfigError
from crossrank.evaluate.calibrate import Calibration, default_calibration_path
from crossrank.models.registry import build_code_digest, lookup
from crossrank.models.source import resolve

ROOT = Path(__file__).resolve().parents[1]


def crossrank(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------- cores: affinity, cgroup quota, override


def _cgroup_v2(tmp_path: Path, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "v2"
    for rel, cpu_max in limits.items():
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "cgroup-v2"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    return root, proc


def test_cgroup_v2_quota_is_read_and_the_tightest_level_wins(tmp_path: Path) -> None:
    root, proc = _cgroup_v2(
        tmp_path, {"": "max 100000", "kubepods/pod1": "250000 100000", "kubepods/pod1/ctr": "max 100000"}
    )
    assert cgroup_cpu_limit(root, proc) == 2.5
    root, proc = _cgroup_v2(tmp_path / "b", {"kubepods/pod1/ctr": "150000 100000", "kubepods": "400000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5


def test_cgroup_v2_without_a_quota_is_unlimited(tmp_path: Path) -> None:
    root, proc = _cgroup_v2(tmp_path, {"": "max 100000", "kubepods/pod1/ctr": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere", tmp_path / "no-such-file") is None


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "v1" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup-v1"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cgroup_cpu_limit(tmp_path / "v1", proc) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cgroup_cpu_limit(tmp_path / "v1", proc) is None


def test_threads_follow_the_override_and_reject_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert available_cores() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ConfigError, match=r"CROSSRANK_THREADS must be a positive integer \(got 'zero'\)"):
        available_cores()
    monkeypatch.delenv(THREADS_ENV)
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_threads_follow_a_fractional_quota_rounded_down(monkeypatch: pytest.MonkeyPatch) -> None:
    import crossrank.cpu as cpu

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 1.5)
    assert available_cores() == 1
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 0.2)
    assert available_cores() == 1  # at least one


# ---------------------------------------------------------------- the engine auto picks, and why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 other\n")
    flags = cpu_flags.__wrapped__(str(info))
    assert flags == {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert int8_dot_product(flags)
    assert not int8_dot_product(frozenset({"avx2", "avx512f"}))
    assert cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    ("flags", "backend", "reason"),
    [
        (frozenset({"avx2"}), "onnx", "fastest engine without int8 dot products (avx2)"),
        (frozenset({"avx2", "avx512_vnni"}), "onnx", "crossrank models prepare ms-marco-MiniLM-L-12-v2"),
    ],
)
def test_auto_picks_by_instruction_set_and_says_why(
    flags: frozenset[str], backend: str, reason: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import crossrank.cpu as cpu

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path))  # nothing prepared
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    got, why = choose_backend(resolve("default"), "auto")
    assert got == backend
    assert reason in why


def test_auto_takes_a_prepared_openvino_graph_on_a_vnni_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import crossrank.cpu as cpu

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path))
    builtin = lookup("default")
    assert builtin is not None
    folder = builtin._openvino_folder()
    folder.mkdir(parents=True)
    (folder / "model.xml").write_text("<net/>")  # only its presence is read here
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert choose_backend(resolve("default"), "auto") == (
        "openvino",
        "the CPU has int8 dot products (avx512_vnni) and the OpenVINO int8 graph is prepared",
    )
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    assert choose_backend(resolve("default"), "auto")[0] == "onnx"  # a prepared graph is slower without VNNI


# ---------------------------------------------------------------- the cache: built by CI, keyed by the code


def test_nothing_under_the_cache_folder_is_tracked() -> None:
    res = subprocess.run(["git", "ls-files", ".cache"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert res.stdout == "", f"built graphs are committed under .cache/: {res.stdout.split()}; git rm them"


def test_cached_graphs_are_named_by_the_code_that_builds_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path))
    builtin = lookup("default")
    assert builtin is not None
    digest = build_code_digest()
    assert len(digest) == 12
    assert builtin._openvino_folder().name.endswith(f"-b{digest}")
    path = builtin.optimized_onnx("int8")
    assert path.parent.parent == tmp_path and path.name.endswith(f"-int8-b{digest}.onnx")


def test_a_cold_cache_first_result_builds_the_graph_and_says_so_once(tmp_path: Path) -> None:
    res = crossrank(
        "rerank",
        "what is a cat",
        "A cat is a small feline.",
        "Paris is in France.",
        env={"CROSSRANK_CACHE": str(tmp_path / "cold")},
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and rows[0]["score"] > 0.9 > 0.01 > rows[1]["score"]
    building = [line for line in res.stderr.splitlines() if "building" in line]
    assert len(building) == 1 and "crossrank models prepare" in building[0], res.stderr
    again = crossrank(
        "rerank", "what is a cat", "A cat is a small feline.", env={"CROSSRANK_CACHE": str(tmp_path / "cold")}
    )
    assert again.returncode == 0 and "building" not in again.stderr


def test_models_prepare_builds_ahead_and_models_lists_the_engine(tmp_path: Path) -> None:
    env = {"CROSSRANK_CACHE": str(tmp_path), "CROSSRANK_THREADS": "1"}
    res = crossrank("models", "prepare", "default", "--no-openvino", env=env)
    assert res.returncode == 0, res.stderr
    assert "ms-marco-MiniLM-L-12-v2: ms-marco-MiniLM-L-12-v2-" in res.stderr
    assert list((tmp_path / "builtin").glob("*-int8-b*.onnx"))
    bad = crossrank("models", "prepare", "nope", env=env)
    assert bad.returncode == 2 and "no built-in model called 'nope'" in bad.stderr
    listing = crossrank("models", env=env)
    rows = {r["name"]: r for r in map(json.loads, listing.stdout.splitlines())}
    assert rows["ms-marco-MiniLM-L-12-v2"]["engine"] in ("onnx", "openvino")
    assert "int8 dot products" in rows["ms-marco-MiniLM-L-12-v2"]["engine_reason"]
    assert rows["all-MiniLM-L6-v2"]["engine"] == "torch"
    assert "1 cores usable" in listing.stderr or "1 core usable" in listing.stderr


# ---------------------------------------------------------------- CLI basics a new user tripped on


def test_version_flag() -> None:
    res = crossrank("--version")
    assert res.returncode == 0 and res.stdout.startswith("crossrank ")


def test_bad_k_is_refused_before_the_model_loads() -> None:
    # 'no-such-model' would fail to load: the k error comes first, so nothing was loaded
    res = crossrank("rerank", "q", "d", "--k", "0", "--model", "no-such-model")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --k must be >= 1 (got 0); leave it out to keep every document"
    res = crossrank(
        "rerank", "--corpus", "c", "--queries", "q", "--run", "r", "--output", "o", "--depth", "5", "--k", "10"
    )
    assert "--depth must be >= --k (got depth=5, k=10)" in res.stderr


def test_rerank_accepts_every_backend_and_lists_them_when_wrong(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from crossrank.models.export import export_optimized

    folder = export_optimized(tiny_models["bert"], tmp_path / "exported", quantize="none")
    res = crossrank("rerank", "a cat", "a cat sat", "dogs bark", "--model", str(folder), "--backend", "openvino")
    assert res.returncode == 0, res.stderr
    ov = [json.loads(x)["score"] for x in res.stdout.splitlines()]
    res = crossrank("rerank", "a cat", "a cat sat", "dogs bark", "--model", str(folder), "--backend", "onnx")
    ort = [json.loads(x)["score"] for x in res.stdout.splitlines()]
    assert ov == pytest.approx(ort, abs=1e-3)  # two int8 engines on a random tiny model: 1.5e-4 apart seen
    res = crossrank("rerank", "a cat", "a cat sat", "--backend", "tpu")
    assert res.stderr.strip() == "error: --backend must be auto, onnx, openvino or torch (got 'tpu')"


def test_a_saved_calibration_is_announced_and_can_be_bypassed(tmp_path: Path) -> None:
    env = {"CROSSRANK_CACHE": str(tmp_path)}
    args = ("rerank", "what is a cat", "A cat is a small feline.")
    plain = crossrank(*args, env=env)
    assert "calibrated" not in plain.stderr
    before = json.loads(plain.stdout.splitlines()[0])["score"]
    os.environ["CROSSRANK_CACHE"], old = str(tmp_path), os.environ.get("CROSSRANK_CACHE")
    try:
        Calibration("platt", a=0.5, b=-1.0, model="default").save(default_calibration_path(resolve("default")))
    finally:
        if old is None:
            del os.environ["CROSSRANK_CACHE"]
        else:
            os.environ["CROSSRANK_CACHE"] = old
    calibrated = crossrank(*args, env=env)
    note = [line for line in calibrated.stderr.splitlines() if line.startswith("note: scores are calibrated")]
    assert len(note) == 1 and "--activation sigmoid" in note[0], calibrated.stderr
    assert json.loads(calibrated.stdout.splitlines()[0])["score"] != pytest.approx(before)
    own = crossrank(*args, "--activation", "sigmoid", env=env)
    assert "note: scores are calibrated" not in own.stderr
    assert json.loads(own.stdout.splitlines()[0])["score"] == pytest.approx(before, abs=1e-6)


def test_a_truncation_is_reported_once(dl19: Path) -> None:
    long_doc = " ".join(["the cell wall is a structural layer"] * 40)
    res = crossrank("rerank", "what is a cell wall", long_doc, "short text", "--max-length", "32")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "truncated" in line]
    assert len(lines) == 1 and "1 of 2 pairs were truncated to max_length=32" in lines[0], res.stderr


def test_non_english_queries_on_the_english_default_are_warned_once(
    default_model: CrossEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    default_model._warned_language = False
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        default_model.score([("猫とは何ですか", "A cat is a small feline."), ("猫", "Paris is in France.")])
        default_model.score([("猫はどこ", "A cat is a small feline.")])
    warned = [r for r in caplog.records if "trained on English" in r.getMessage()]
    assert len(warned) == 1 and "multilingual cross-encoder" in warned[0].getMessage()
    caplog.clear()
    default_model._warned_language = False
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        default_model.score([("qu'est-ce qu'un chat ? café", "Un chat est un petit félin.")])
    assert not [r for r in caplog.records if "trained on English" in r.getMessage()]


def test_a_vnni_cpu_builds_the_faster_graph_in_the_background_for_the_next_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    import crossrank.cpu as cpu

    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path))
    monkeypatch.setenv("CROSSRANK_BACKGROUND_BUILD", "1")
    # the mechanism, not the graph, is under test here: a small calibration builds in seconds
    monkeypatch.setenv("CROSSRANK_CALIBRATION_PAIRS", "40")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        first = CrossEncoder("fast")
    assert first.backend_name == "onnx"  # the first result never waits on the calibration
    said = [r.getMessage() for r in caplog.records if "in the background" in r.getMessage()]
    assert len(said) == 1 and "CROSSRANK_BACKGROUND_BUILD=0" in said[0]
    builtin = lookup("fast")
    assert builtin is not None
    lock = tmp_path / "builtin" / "crossrank-fast-prepare.lock"
    assert builtin.prepare_in_background() is None  # one build at a time
    deadline = time.monotonic() + 900
    while lock.exists() and time.monotonic() < deadline:
        time.sleep(1)
    log_text = (tmp_path / "builtin" / "crossrank-fast-prepare.log").read_text()
    assert not lock.exists() and builtin.openvino_ready(), log_text
    assert "-openvino-int8-cal40-" in builtin._openvino_folder().name  # the count names the graph
    again = CrossEncoder("fast")
    assert again.backend_name == "openvino" and "prepared" in again.backend_reason
    pairs = [("what is a cat", "A cat is a small feline."), ("what is a cat", "Paris is in France.")]
    assert again.score(pairs)[0] > again.score(pairs)[1]
    monkeypatch.setenv("CROSSRANK_BACKGROUND_BUILD", "0")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert lookup("default").prepare_in_background() is None  # type: ignore[union-attr]


def test_a_documents_file_of_strings_and_records_is_reranked(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"Paris is in France."\n{"id": "cat", "text": "A cat is a small feline."}\n', encoding="utf-8")
    res = crossrank("rerank", "what is a cat", "--documents", str(docs))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["cat", "0"]
    docs.write_text('"Paris is in France."\n42\n', encoding="utf-8")
    bad = crossrank("rerank", "what is a cat", "--documents", str(docs))
    assert bad.returncode == 2 and f"{docs}:2" in bad.stderr, bad.stderr


def test_an_interrupt_cancels_the_batches_not_yet_started() -> None:
    import threading

    from crossrank.engine import run_parallel

    done: list[int] = []
    lock = threading.Lock()

    def batch(i: int) -> None:
        if i == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the caller
        threading.Event().wait(0.005)
        with lock:
            done.append(i)

    with pytest.raises(KeyboardInterrupt):
        run_parallel(batch, range(400), workers=2)
    assert len(done) < 50  # the queued batches were cancelled, not run to the end


def test_training_reads_the_same_data_folders_as_eval() -> None:
    from crossrank.train.data import load_beir

    corpus, queries, qrels = load_beir(ROOT / "examples" / "dl19", "test")  # qrels.tsv, one split
    assert len(queries) == 10 and qrels and set(qrels) <= set(queries) and corpus


def test_long_work_draws_its_progress_bars_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from crossrank._progress import counting
    from crossrank.scale.batch import _progress
    from crossrank.train.trainer import _Bar

    with _progress(True, 4) as advance:
        advance(4)
    with counting(True, "teacher scores", 3) as tick:  # the bar distillation's teacher scoring shows
        assert tick is not None
        tick(3)
    with counting(False, "hidden", 3) as tick:
        assert tick is None
    train_bar = _Bar(5, 0)
    train_bar.update(5, 0.1, 10.0)
    train_bar.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert "reranking on Ray" in err and "teacher scores" in err and "training" in err


def test_the_calibration_size_can_be_set_and_a_bad_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.models.calibration import calibration_pairs

    assert calibration_pairs() == 600
    monkeypatch.setenv("CROSSRANK_CALIBRATION_PAIRS", "64")
    assert calibration_pairs() == 64
    for bad in ("0", "many", "-5", "9999"):
        monkeypatch.setenv("CROSSRANK_CALIBRATION_PAIRS", bad)
        with pytest.raises(ConfigError, match=r"CROSSRANK_CALIBRATION_PAIRS=.* whole number from 8 to 5000"):
            calibration_pairs()
