"""Scale-out on a real local Ray cluster: a head node and a second worker node, started with `ray start`.

Batch reranking of the DL 2019 BM25 top-100 through Ray Data equals the single-process command's
run; a worker killed by SIGKILL mid-job is replaced and the output still holds every pair once;
the Ray Serve deployment answers like `crossrank serve` and loses no request when a replica stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray

from crossrank.io import read_trec_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")

# generous: a loaded CI machine can take seconds to answer; no test relies on a client default
HTTP_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a head node and one more worker node (one CPU each) on 127.0.0.1; yield the address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = tmp_path_factory.mktemp("ray")
    # token authentication (conftest sets RAY_AUTH_MODE and RAY_AUTH_TOKEN before Ray is imported)
    # and the model cache path reach every node, worker and CLI subprocess through the environment
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--object-store-memory", str(300 * 1024**2), "--disable-usage-stats"]
    head = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    head += ["--include-dashboard", "false", "--temp-dir", str(temp), *common]
    subprocess.run(head, check=True, env=env, capture_output=True, timeout=120)
    try:
        worker = [str(RAY), "start", "--address", address, "--node-ip-address", "127.0.0.1", *common]
        subprocess.run(worker, check=True, env=env, capture_output=True, timeout=120)
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(0.2)
        yield address
    finally:
        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def crossrank(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    return read_trec_run(path)


# ---------------------------------------------------------------------- batch reranking


def test_ray_run_equals_the_single_process_run_on_dl19(cluster: str, dl19: Path, tmp_path: Path) -> None:
    # the BM25 top-100 of the first 10 queries: 1,000 pairs, two blocks of at most 512
    lines = (dl19 / "runs" / "bm25.top100.trec").read_text(encoding="utf-8").splitlines()
    first = list(dict.fromkeys(line.split()[0] for line in lines))[:10]
    run = tmp_path / "bm25.top100.first10.trec"
    run.write_text("".join(f"{line}\n" for line in lines if line.split()[0] in first), encoding="utf-8")
    inputs = [
        "--corpus", str(dl19 / "corpus.jsonl"),
        "--queries", str(dl19 / "queries.jsonl"),
        "--run", str(run),
        "--depth", "100",
    ]  # fmt: skip
    local = crossrank("rerank", *inputs, "--output", str(tmp_path / "local.trec"))
    assert local.returncode == 0, local.stderr
    on_ray = crossrank(
        "rerank", *inputs, "--output", str(tmp_path / "ray.trec"), "--engine", "ray", "--address", cluster,
        "--workers", "2", "--block-pairs", "512",
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    assert "reranked 1000 pairs for 10 queries (ray: 2 workers, 2 blocks, 0 retried" in on_ray.stderr
    want, got = read_run(tmp_path / "local.trec"), read_run(tmp_path / "ray.trec")
    assert list(got) == list(want) and len(want) == 10
    for qid in want:
        assert [d for d, _ in got[qid]] == [d for d, _ in want[qid]], qid
        np.testing.assert_allclose([s for _, s in got[qid]], [s for _, s in want[qid]], rtol=0, atol=1e-5)


def test_the_output_does_not_depend_on_the_number_of_workers(cluster: str, dl19: Path) -> None:
    from crossrank.scale import rerank_on_ray, run_pairs

    pairs, _ = run_pairs(dl19 / "runs" / "bm25.top100.trec", dl19 / "corpus.jsonl", dl19 / "queries.jsonl")
    pairs = pairs.slice(0, 600)
    one = rerank_on_ray(pairs, workers=1, block_pairs=128, address=cluster)
    two = rerank_on_ray(pairs, workers=2, block_pairs=128, address=cluster)
    assert one.table.equals(two.table)  # bit for bit: the blocks are cut by block_pairs alone
    assert [r.doc_ids() for r in one.rankings] == [r.doc_ids() for r in two.rankings]
    assert one.summary.blocks == two.summary.blocks == 5 and two.summary.workers == 2
    assert one.table.column("query_id").to_pylist() == pairs.column("query_id").to_pylist()  # input order


def test_a_worker_killed_mid_job_is_replaced_and_every_pair_comes_back_once(cluster: str, dl19: Path) -> None:
    from crossrank.scale import rerank_on_ray, run_pairs

    pairs, _ = run_pairs(dl19 / "runs" / "bm25.top100.trec", dl19 / "corpus.jsonl", dl19 / "queries.jsonl")
    pairs = pairs.slice(0, 1600)
    killed: list[int] = []

    def kill_one_worker(ledger: Any) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                stats = ray.get(ledger.stats.remote())
                # both workers up, the job under way, and the victim just into a block
                victim = stats["pids"][0] if len(stats["pids"]) >= 2 else None
                if stats["finished"] >= 2 and stats["busy_for"].get(victim, 1.0) < 0.15:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                    return
                time.sleep(0.01)

        threading.Thread(target=watch, daemon=True).start()

    result = rerank_on_ray(pairs, workers=2, block_pairs=64, address=cluster, on_start=kill_one_worker)
    assert killed, "no worker was killed"
    s = result.summary
    assert s.pairs == 1600 and s.blocks == 25
    assert s.worker_restarts >= 1 and s.retries >= 1, s  # the dead worker's block ran again
    table = result.table
    keys = list(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True))
    assert len(set(keys)) == 1600 and keys == list(
        zip(pairs.column("query_id").to_pylist(), pairs.column("doc_id").to_pylist(), strict=True)
    )
    # and the scores are the ones an undisturbed run gives
    calm = rerank_on_ray(pairs.slice(0, 320), workers=2, block_pairs=64, address=cluster)
    np.testing.assert_allclose(
        table.column("score").to_numpy()[:320], calm.table.column("score").to_numpy(), rtol=0, atol=1e-6
    )


def test_pairs_files_and_parquet_output(cluster: str, dl19: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from crossrank.scale import run_pairs

    pairs, _ = run_pairs(dl19 / "runs" / "bm25.top100.trec", dl19 / "corpus.jsonl", dl19 / "queries.jsonl")
    pq.write_table(pairs.slice(0, 300), tmp_path / "pairs.parquet")
    out = crossrank(
        "rerank", "--pairs", str(tmp_path / "pairs.parquet"), "--output", str(tmp_path / "scored.parquet"),
        "--engine", "ray", "--address", cluster, "--workers", "2", "--block-pairs", "100",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    scored = pq.read_table(tmp_path / "scored.parquet")
    assert scored.column_names == ["query_id", "doc_id", "score", "rank", "truncated"] and scored.num_rows == 300
    local = crossrank("rerank", "--pairs", str(tmp_path / "pairs.parquet"), "--output", str(tmp_path / "local.parquet"))
    assert local.returncode == 0, local.stderr
    here = pq.read_table(tmp_path / "local.parquet")
    assert scored.column("rank").to_pylist() == here.column("rank").to_pylist()
    np.testing.assert_allclose(scored.column("score").to_numpy(), here.column("score").to_numpy(), atol=1e-5)
    # bad input fails before any worker starts, with the column named
    pq.write_table(pairs.slice(0, 3).drop_columns(["text"]), tmp_path / "bad.parquet")
    bad = crossrank("rerank", "--pairs", str(tmp_path / "bad.parquet"), "--output", str(tmp_path / "x.trec"))
    assert bad.returncode != 0 and "lacks column(s) text" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------- serving


def test_ray_serve_answers_like_crossrank_serve_and_a_stopping_replica_loses_nothing(
    cluster: str, default_model: Any
) -> None:
    import cohere
    from ray import serve

    from crossrank.scale.serving import build_application, deployment_options
    from crossrank.serve import create_app
    from test_serve import dl19_candidates, serving

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # the same engine as the local side: "auto" turns to OpenVINO on a VNNI CPU once its graph is
        # prepared in the background, and two int8 engines differ in the third decimal
        app = build_application(backend=default_model.backend_name, options=deployment_options(replicas=2))
        serve.run(app, name="crossrank", route_prefix="/")
        query, docs = dl19_candidates(1, 30)[0]
        with serving(create_app(default_model)) as local, httpx.Client(timeout=60) as http:
            want = cohere.ClientV2(base_url=local, api_key="unused", httpx_client=http).rerank(
                model="default", query=query, documents=docs, top_n=10
            )
        with httpx.Client(timeout=60) as http:
            got = cohere.ClientV2(base_url=base, api_key="unused", httpx_client=http).rerank(
                model="default", query=query, documents=docs, top_n=10
            )
        assert [r.index for r in got.results] == [r.index for r in want.results]
        np.testing.assert_allclose(
            [r.relevance_score for r in got.results], [r.relevance_score for r in want.results], rtol=0, atol=1e-6
        )
        assert got.meta is not None and got.meta.billed_units is not None
        # the error shapes are the app's own
        bad = httpx.post(
            f"{base}/v2/rerank", json={"model": "default", "query": query, "documents": []}, timeout=HTTP_TIMEOUT
        )
        assert bad.status_code in (400, 422) and "documents" in bad.json()["message"]

        # under load, scale 2 -> 1: the stopping replica drains; every request gets its answer
        expected = [r.index for r in got.results]
        stop = threading.Event()

        def client() -> list[tuple[int, list[int]]]:
            out = []
            with httpx.Client(timeout=120) as http:
                while not stop.is_set():
                    r = http.post(
                        f"{base}/v2/rerank", json={"model": "default", "query": query, "documents": docs, "top_n": 10}
                    )
                    out.append((r.status_code, [x["index"] for x in r.json()["results"]] if r.is_success else []))
            return out

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client) for _ in range(4)]
            time.sleep(3)
            one = build_application(backend=default_model.backend_name, options=deployment_options(replicas=1))
            serve.run(one, name="crossrank", route_prefix="/")
            deadline = time.monotonic() + 120
            while serve.status().applications["crossrank"].deployments["crossrank"].replica_states != {"RUNNING": 1}:
                assert time.monotonic() < deadline, serve.status()
                time.sleep(0.2)
            time.sleep(2)
            stop.set()
            answers = [a for f in futures for a in f.result()]
        assert len(answers) >= 8
        assert [code for code, _ in answers] == [200] * len(answers)
        assert all(order == expected for _, order in answers)
    finally:
        serve.shutdown()


def test_cli_rejects_bad_ray_settings_in_one_line() -> None:
    out = crossrank("rerank", "--pairs", "nope.parquet", "--output", "x.trec", "--engine", "spark")
    assert out.returncode != 0 and "--engine must be local or ray" in out.stderr and "Traceback" not in out.stderr
    out = crossrank("serve", "--engine", "ray", "--min-replicas", "3", "--max-replicas", "1")
    assert out.returncode != 0 and "min_replicas <= max_replicas" in out.stderr and "Traceback" not in out.stderr


def test_cli_serve_engine_ray_serves_and_drains_on_sigterm(cluster: str, default_model: Any, tmp_path: Path) -> None:
    from ray import serve

    from test_serve import dl19_candidates

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log_out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--engine", "ray", "--address", cluster, "--port", str(port),
             "--replicas", "1", "--max-ongoing-requests", "8", "--backend", default_model.backend_name],
            stdout=log_out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, log_file.read_text()
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "crossrank serve --engine ray did not become ready"
                time.sleep(0.2)
            query, docs = dl19_candidates(1, 20)[0]
            answer = httpx.post(f"{base}/v1/rerank", json={"query": query, "documents": docs}, timeout=60)
            assert answer.status_code == 200
            want = default_model.rerank(query, docs).hits
            assert [r["index"] for r in answer.json()["results"]] == [h.index for h in want]
            assert (
                httpx.get(f"{base}/", timeout=HTTP_TIMEOUT).status_code == 200
            )  # the same app: the playground page too
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(120) == 0, log_file.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "through Ray Serve (1 replica)" in log_file.read_text()
    assert "crossrank" not in serve.status().applications  # deleted; the shared cluster's Serve stays up
