"""Rerank speed, side by side: sentence-transformers, FlashRank and crossrank on the same real pairs.

By default: the BM25 top-100 of the 43 TREC DL 2019 queries from ../shared/data (4,300 pairs), the
default model (cross-encoder/ms-marco-MiniLM-L-12-v2) in every system, the same threads. Each
system runs in its own subprocess so peak RSS is its own. Each system is timed two ways over the
same pairs: per query (one call per query's candidates, as a search service calls it) and in batch
(every pair in one call, as an offline job would; FlashRank has no such call). Prints pairs/s both
ways, p50/p95 latency to rerank one query's candidates, peak RSS, nDCG@10, and ratios to (a)
sentence-transformers fp32 torch and to the fastest sentence-transformers backend. Every result
records the CPU's instruction set and the load average before and after (was the machine idle?).

    python bench/rerank_speed.py                      # everything (about 20 minutes on 2 AVX2 cores)
    python bench/rerank_speed.py --data DIR --run FILE --only crossrank-default,st-torch-fp32
    python bench/rerank_speed.py --compare-commit HEAD~1   # also crossrank-default as of that commit
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"
WORK = ROOT / "bench" / ".work"

SYSTEMS = {
    "st-torch-fp32": "(a) sentence-transformers CrossEncoder, fp32 torch, batch 32",
    "st-onnx-int8": "(b) sentence-transformers backend='onnx', dynamic int8 (its avx512_vnni or avx2 config)",
    "st-openvino-int8": "(b) sentence-transformers backend='openvino', static int8 (its export helper)",
    "flashrank": "(c) FlashRank Ranker, the same int8 ONNX graph",
    "crossrank-default": "(d) crossrank CrossEncoder('default'), default settings (auto engine)",
    "crossrank-onnx": "(d) crossrank backend='onnx' (ONNX Runtime, fused graph, dynamic int8)",
    "crossrank-openvino": "(d) crossrank backend='openvino' (static int8 OpenVINO graph)",
    "crossrank-previous": "(e) crossrank-default as of --compare-commit, run from that commit's src/",
    "crossrank-previous-onnx": "(e) crossrank-onnx as of --compare-commit",
    "crossrank-previous-openvino": "(e) crossrank-openvino as of --compare-commit",
}
ST_SYSTEMS = ("st-torch-fp32", "st-onnx-int8", "st-openvino-int8")


def machine() -> dict[str, Any]:
    """Return what the figures depend on: CPU model, instruction set, usable cores, load average."""
    import platform

    sys.path.insert(0, str(ROOT / "src"))
    from crossrank.cpu import available_cores, cpu_flags

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "isa": sorted(cpu_flags()),
        "cores": available_cores(),
        "loadavg_1min": os.getloadavg()[0],
        "python": platform.python_version(),
    }


def _st_onnx_config() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from crossrank.cpu import int8_dot_product

    return "avx512_vnni" if int8_dot_product() else "avx2"


def _st_onnx_file() -> str:
    """The file sentence-transformers' export writes for the config (its avx2 config quantizes to uint8)."""
    return {"avx512_vnni": "onnx/model_qint8_avx512_vnni.onnx", "avx2": "onnx/model_quint8_avx2.onnx"}[
        _st_onnx_config()
    ]


# ----------------------------------------------------------------------------- data


def load(
    data: Path, run_file: Path, n_queries: int, depth: int
) -> tuple[list[str], list[str], list[list[dict[str, str]]]]:
    from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run

    corpus = read_beir_corpus(data / "corpus.jsonl")
    queries = read_beir_queries(data / "queries.jsonl")
    run = read_trec_run(run_file)
    qids = [q for q in run if q in queries][:n_queries]
    return qids, [queries[q] for q in qids], [[corpus[d] for d, _ in run[q][:depth]] for q in qids]


def ndcg10(
    qids: list[str], docs: list[list[dict[str, str]]], scores: list[list[float]], qrels_file: Path
) -> float | None:
    if not qrels_file.is_file():
        return None
    import ir_measures

    from crossrank.io import read_qrels

    qrels = read_qrels(qrels_file)
    qr = [ir_measures.Qrel(q, d, g) for q in qids if q in qrels for d, g in qrels[q].items()]
    sd = [
        ir_measures.ScoredDoc(q, d["id"], float(s))
        for q, ds, ss in zip(qids, docs, scores, strict=True)
        for d, s in zip(ds, ss, strict=True)
    ]
    m = ir_measures.parse_measure("nDCG@10")
    return float(ir_measures.calc_aggregate([m], qr, sd)[m])


# ----------------------------------------------------------------------------- systems


def make_scorer(name: str, threads: int) -> Any:
    """Return score(query, docs) -> list[float] for one system (its model loaded and warm)."""
    fp32 = WORK / "minilm-fp32"
    if name.startswith("st-"):
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        if name == "st-torch-fp32":
            model = CrossEncoder(str(fp32), device="cpu")
        elif name == "st-onnx-int8":
            model = CrossEncoder(
                str(WORK / "st-onnx"),
                backend="onnx",
                model_kwargs={
                    "file_name": _st_onnx_file(),
                    "provider": "CPUExecutionProvider",
                },
            )
        else:
            model = CrossEncoder(
                str(WORK / "st-openvino"),
                backend="openvino",
                model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"},
            )

        def st(q: str, docs: list[dict[str, str]]) -> list[float]:
            return model.predict([(q, d["text"]) for d in docs], batch_size=32, show_progress_bar=False).tolist()

        def st_many(qs: list[str], ds: list[list[dict[str, str]]]) -> list[list[float]]:
            flat = [(q, d["text"]) for q, docs in zip(qs, ds, strict=True) for d in docs]
            scores = model.predict(flat, batch_size=32, show_progress_bar=False).tolist()
            out, i = [], 0
            for docs in ds:
                out.append(scores[i : i + len(docs)])
                i += len(docs)
            return out

        st.many = st_many  # type: ignore[attr-defined]
        return st
    if name == "flashrank":
        from flashrank import Ranker, RerankRequest

        ranker = Ranker(model_name="ms-marco-MiniLM-L-12-v2", cache_dir=str(WORK / "flashrank"), max_length=512)

        def fr(q: str, docs: list[dict[str, str]]) -> list[float]:
            out = ranker.rerank(
                RerankRequest(query=q, passages=[{"id": str(i), "text": d["text"]} for i, d in enumerate(docs)])
            )
            by = {int(r["id"]): float(r["score"]) for r in out}
            return [by[i] for i in range(len(docs))]

        return fr
    from crossrank import CrossEncoder as CR
    from crossrank import ScoringConfig

    backend = {"crossrank-onnx": "onnx", "crossrank-openvino": "openvino"}.get(name, "auto")
    ce = CR("default", backend=backend, config=ScoringConfig(threads=threads))  # type: ignore[arg-type]
    print(f"{name}: {ce.backend_name} ({getattr(ce, 'backend_reason', '')})", file=sys.stderr)

    def cr(q: str, docs: list[dict[str, str]]) -> list[float]:
        r = ce.rerank(q, docs)
        by = {h.index: h.score for h in r.hits}
        return [by[i] for i in range(len(docs))]

    cr.many = lambda qs, ds: [
        [{h.index: h.score for h in r.hits}[i] for i in range(len(d))]
        for r, d in zip(ce.rerank_many(qs, ds), ds, strict=True)
    ]  # type: ignore[attr-defined]
    return cr


def prepare(only: list[str]) -> None:
    """Build, once, the files the anchors need (not timed)."""
    WORK.mkdir(parents=True, exist_ok=True)
    fp32 = WORK / "minilm-fp32"
    if not fp32.is_dir():
        from crossrank.models.convert import convert_builtin

        convert_builtin("default", fp32)
    st_config = _st_onnx_config()
    if "st-onnx-int8" in only and not (WORK / "st-onnx" / _st_onnx_file()).is_file():
        from sentence_transformers import CrossEncoder
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model

        shutil.copytree(fp32, WORK / "st-onnx", dirs_exist_ok=True)
        model = CrossEncoder(str(WORK / "st-onnx"), backend="onnx")
        export_dynamic_quantized_onnx_model(model, st_config, str(WORK / "st-onnx"))
    if (
        "st-openvino-int8" in only
        and not (WORK / "st-openvino" / "openvino" / "openvino_model_qint8_quantized.xml").is_file()
    ):
        _st_openvino_static(fp32)
    if "flashrank" in only and not (WORK / "flashrank" / "ms-marco-MiniLM-L-12-v2").is_dir():
        from crossrank.models.registry import lookup

        src = lookup("default").folder()  # type: ignore[union-attr]
        dst = WORK / "flashrank" / "ms-marco-MiniLM-L-12-v2"
        dst.mkdir(parents=True)
        shutil.copy2(src / "model.onnx", dst / "flashrank-MiniLM-L-12-v2_Q.onnx")
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy2(fp32 / f, dst / f)
        shutil.copy2(fp32 / "config.json", dst / "config.json")


def _st_openvino_static(fp32: Path) -> None:
    """sentence-transformers' own static-int8 OpenVINO export, fed a local calibration set.

    Its helper downloads GLUE/SST-2 for calibration; offline we give it 300 DL 2021 passages instead,
    preprocessed exactly as the helper does (padded to 384 tokens).
    """
    from unittest import mock

    from datasets import Dataset
    from optimum.intel.openvino import OVQuantizer
    from sentence_transformers import CrossEncoder
    from sentence_transformers.backend import export_static_quantized_openvino_model

    shutil.copytree(fp32, WORK / "st-openvino", dirs_exist_ok=True)
    model = CrossEncoder(str(WORK / "st-openvino"), backend="openvino")
    dl21 = ROOT.parent / "shared" / "data" / "trec-dl-2021-passage" / "corpus.jsonl"
    texts = [json.loads(x)["text"] for x in dl21.read_text().splitlines()[:300]]
    encoded = model.tokenizer(texts, padding="max_length", max_length=384, truncation=True)
    local = Dataset.from_dict(dict(encoded))
    with mock.patch.object(OVQuantizer, "get_calibration_dataset", lambda self, *a, **k: local):
        export_static_quantized_openvino_model(model, None, str(WORK / "st-openvino"))


# ----------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> None:
    qids, qtexts, docs = load(args.data, args.run, args.queries, args.depth)
    scorer = make_scorer(args.worker, args.threads)
    scorer(qtexts[0], docs[0][:8])  # warm up
    n_pairs = sum(len(d) for d in docs)
    lat = []
    start = time.perf_counter()
    scores = []
    for q, d in zip(qtexts, docs, strict=True):
        t = time.perf_counter()
        scores.append(scorer(q, d))
        lat.append(time.perf_counter() - t)
    per_query = n_pairs / (time.perf_counter() - start)
    batch = None
    if hasattr(scorer, "many"):
        start = time.perf_counter()
        batch_scores = scorer.many(qtexts, docs)
        batch = n_pairs / (time.perf_counter() - start)
        assert len(batch_scores) == len(docs)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, round(p * (len(lat) - 1)))]  # noqa: E731
    print(
        json.dumps(
            {
                "system": args.worker,
                "pairs": n_pairs,
                "pairs_per_s_per_query": per_query,
                "pairs_per_s_batch": batch,
                "pairs_per_s": max(per_query, batch or 0.0),
                "p50_ms": 1000 * pct(0.5),
                "p95_ms": 1000 * pct(0.95),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "ndcg10": ndcg10(qids, docs, scores, args.data / "qrels" / "test.tsv"),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (corpus, queries, qrels/test.tsv)")
    p.add_argument("--run", type=Path, default=None, help="first-stage TREC run (default: DATA/runs/bm25.top100.trec)")
    p.add_argument("--queries", type=int, default=43)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--latency-queries", type=int, default=10, help="queries timed one by one for p50/p95")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--compare-commit", default=None, help="also run crossrank-default as of this git commit")
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems: " + ", ".join(SYSTEMS))
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.run = args.run or args.data / "runs" / "bm25.top100.trec"
    if args.worker:
        worker(args)
        return
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}")
    if args.compare_commit and "crossrank-previous" not in only:
        only.append("crossrank-previous")
    if any(s.startswith("crossrank-previous") for s in only) and not args.compare_commit:
        p.error("crossrank-previous needs --compare-commit REV")
    prepare(only)
    before = machine()
    print(f"machine: {json.dumps(before)}", file=sys.stderr, flush=True)
    results = []
    for name in only:
        env = dict(os.environ)
        worker_name = name
        if name.startswith("crossrank-previous"):
            src = _checkout(args.compare_commit)
            env["PYTHONPATH"] = str(src / "src")
            env["CROSSRANK_CACHE"] = str(WORK / f"cache-{args.compare_commit.replace('/', '_')}")
            worker_name = "crossrank-" + (name.removeprefix("crossrank-previous").lstrip("-") or "default")
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            worker_name,
            "--data",
            str(args.data),
            "--run",
            str(args.run),
            "--queries",
            str(args.queries),
            "--depth",
            str(args.depth),
            "--threads",
            str(args.threads),
            "--latency-queries",
            str(args.latency_queries),
        ]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(
                f"  {name} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}",
                file=sys.stderr,
            )
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["system"] = name
        engine = [x for x in out.stderr.splitlines() if x.startswith(f"{worker_name}: ")]
        row["engine"] = engine[-1].partition(": ")[2] if engine else ""
        results.append(row)
    after = machine()
    report(results, args)
    if args.json:
        doc = {
            "command": "python bench/rerank_speed.py " + " ".join(sys.argv[1:]),
            "machine": {**before, "loadavg_1min_after": after["loadavg_1min"]},
            "data": {"collection": args.data.name, "queries": args.queries, "depth": args.depth},
            "compare_commit": args.compare_commit,
            "results": results,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


def _checkout(rev: str) -> Path:
    """Return a clean worktree of ``rev`` (its src/ is put on PYTHONPATH for crossrank-previous)."""
    sha = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    tree = WORK / f"tree-{sha[:12]}"
    if not tree.is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), sha], check=True, cwd=ROOT, capture_output=True
        )
    return tree


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    base = next((r for r in results if r["system"] == "st-torch-fp32"), None)
    st = [r for r in results if r["system"] in ST_SYSTEMS]
    best_st = max(st, key=lambda r: r["pairs_per_s"]) if st else None
    t = Table(
        title=f"rerank speed: {args.data.name}, {args.queries} queries x top-{args.depth}, {args.threads} threads"
    )
    cols = ("system", "per query", "batch", "x (a)", "x best ST", "p50 ms", "p95 ms", "peak RSS MB", "nDCG@10")
    for col in cols:
        t.add_column(col, justify="left" if col == "system" else "right")
    for r in results:

        def ratio(ref: dict[str, Any] | None, r: dict[str, Any] = r) -> str:
            return f"{r['pairs_per_s'] / ref['pairs_per_s']:.2f}" if ref else "-"

        t.add_row(
            r["system"],
            f"{r['pairs_per_s_per_query']:.1f}",
            f"{r['pairs_per_s_batch']:.1f}" if r.get("pairs_per_s_batch") else "-",
            ratio(base),
            ratio(best_st),
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['ndcg10']:.4f}" if r["ndcg10"] is not None else "-",
        )
    Console(width=160).print(t)
    print("pairs/s: per query (one call per query) and batch (all pairs in one call); ratios use the better of the two")
    for s, desc in SYSTEMS.items():
        print(f"  {s}: {desc}")


if __name__ == "__main__":
    main()
