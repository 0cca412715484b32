"""Does fine-tuning on your own judgments help? The default model, zero-shot and fine-tuned on WikiQA train.

    python bench/finetune_wikiqa.py [--work bench/.work/wikiqa] [--epochs 1]

1. zero-shot: the default model reranks the candidate answers of WikiQA test;
2. `crossrank train` fine-tunes the default on WikiQA train (groups mined from the train
   candidates, listwise loss), keeping the best step on WikiQA dev (MAP), and exports it;
3. the exported model (what a user serves) reranks WikiQA test.

MAP and MRR are computed by ir-measures on the 237 test questions that have both a correct and a
wrong candidate (the usual filtered set); the difference is tested per question with a paired
t-test and a paired randomization test. Results go to docs/bench-finetune-wikiqa.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikiqa"


def rerank_run(model: str, queries: dict[str, str], cands: dict[str, list[str]], corpus: dict) -> dict:  # type: ignore[type-arg]
    from crossrank import CrossEncoder

    ce = CrossEncoder(model, calibration=None)
    keys = [(q, d) for q in cands for d in cands[q]]
    scores = ce.score([(queries[q], corpus[d]["text"]) for q, d in keys], activation="none")
    run: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(keys, scores.tolist(), strict=True):
        run.setdefault(q, {})[d] = float(s)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "wikiqa")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-5)
    args = ap.parse_args()

    from crossrank.evaluate.metrics import evaluate
    from crossrank.evaluate.significance import paired_comparison
    from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, read_trec_run

    corpus = read_beir_corpus(DATA / "corpus.jsonl")
    queries = read_beir_queries(DATA / "queries.jsonl")
    qrels = read_qrels(DATA / "qrels" / "test.tsv")
    filtered = {q: j for q, j in qrels.items() if any(g > 0 for g in j.values()) and any(g <= 0 for g in j.values())}
    run = read_trec_run(DATA / "runs" / "test.candidates.trec")
    cands = {q: [d for d, _ in run[q]] for q in filtered}

    t0 = time.perf_counter()
    zero = rerank_run("default", queries, cands, corpus)
    t_zero = time.perf_counter() - t0

    out = args.work
    cmd = [
        str(Path(sys.executable).parent / "crossrank"), "train",
        "--model", "default",
        "--data", str(DATA), "--split", "train",
        "--candidates", str(DATA / "runs" / "train.candidates.trec"),
        "--negatives", "7", "--loss", "listwise",
        "--epochs", str(args.epochs), "--batch-size", "8", "--lr", str(args.lr), "--warmup", "0.1",
        "--dev-data", str(DATA), "--dev-split", "dev", "--dev-run", str(DATA / "runs" / "dev.candidates.trec"),
        "--dev-measure", "AP", "--eval-every", "25", "--checkpoint-every", "25",
        "--export", "int8", "--output", str(out), "--json", str(out.parent / "wikiqa-train.json"),
    ]  # fmt: skip
    print("$ crossrank", " ".join(cmd[1:]), flush=True)
    t1 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_train = time.perf_counter() - t1
    trained = json.loads((out.parent / "wikiqa-train.json").read_text())
    tuned = rerank_run(str(out / "onnx"), queries, cands, corpus)

    measures = ["AP", "RR", "nDCG@10", "P@1"]
    res = evaluate(filtered, {"zero-shot": zero, "fine-tuned": tuned}, measures)
    rows = {}
    for m in res.measures:
        base = res.per_query["zero-shot"][m]
        new = res.per_query["fine-tuned"][m]
        common = sorted(set(base) & set(new))
        cmp = paired_comparison([base[q] for q in common], [new[q] for q in common])
        rows[m] = {**cmp.to_dict(), "significant": cmp.significant(0.05)}
    print(f"\nWikiQA test, {len(filtered)} questions with correct and wrong candidates")
    print(f"{'measure':<10}{'zero-shot':>10}{'fine-tuned':>12}{'diff':>9}   95% CI              t p      rand p")
    for m, r in rows.items():
        print(
            f"{m:<10}{r['baseline']:>10.4f}{r['system']:>12.4f}{r['mean_diff']:>+9.4f}   "
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  {r['t_p']:.2g}  {r['randomization_p']:.2g}"
            + ("  *" if r["significant"] else "")
        )
    result = {
        "command": "python bench/finetune_wikiqa.py " + " ".join(sys.argv[1:]),
        "train_command": "crossrank " + " ".join(cmd[1:]),
        "questions": len(filtered),
        "comparison": rows,
        "training": trained,
        "seconds": {"zero_shot_scoring": t_zero, "training_and_export": t_train},
    }
    (ROOT / "docs" / "bench-finetune-wikiqa.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
