"""Decoder (LLM) reranker speed at the real size: Qwen3-Reranker-0.6B's exact config, random weights.

Weights do not change the cost of a forward pass, so a randomly initialised model with
Qwen/Qwen3-Reranker-0.6B's config (28 layers, hidden 1024, 16/8 heads, vocabulary 151,669) costs
what the real one costs; quality figures need the real weights and are not measured here. The
tokenizer is a byte-level BPE with Qwen's own pre-tokenizer, trained here on the DL 2019 passages
(32k merges, so texts are about as many tokens as with Qwen's vocabulary).

It reranks the BM25 top-``depth`` of the first ``queries`` queries of examples/dl19 (default 3 x 100),
one call per query, and runs each system in its own subprocess (so peak RSS is its own):

    (a) st-fp32         sentence-transformers 6 CrossEncoder on the folder (fp32), pairs formatted as the
                        seq-cls conversions' model cards format them
    (a') st-bf16        the same with bf16 weights
    (b) reference       the model card's transformers loop (left padding, full logits, softmax of no/yes), fp32
    (c) crossrank       CrossEncoder(folder), default settings: folded 2-row head, shared-prefix reuse, and
                        the precision ``auto`` picks (bf16 on a CPU with native bf16 and on a GPU, else fp32)
    (c') crossrank-no-reuse   the same with prefix_reuse=False (what the reuse alone gives, same precision)
    (c'') crossrank-fp32      the default with precision="fp32" (what the precision alone gives)

It prints pairs/s, p50 latency per query, peak RSS, and agreement with (b): max |log-odds difference|
and Kendall tau per query.

    python bench/llm_rerank_speed.py                      # 3 queries x 100 (about 40 minutes on 2 cores)
    python bench/llm_rerank_speed.py --queries 1 --depth 20 --json out.json
    python bench/llm_rerank_speed.py --device cuda --queries 20   # on a GPU (ST and crossrank on that device)

``--tokenizer DIR`` takes the trained tokenizer from a folder written earlier (on a machine without
the shared DL 2019 corpus); the random weights are built where the bench runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
FOLDER = WORK / "qwen3-reranker-0.6b-random"
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

# Qwen/Qwen3-Reranker-0.6B's config.json, as published
QWEN3_RERANKER_06B = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151669,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
TASK = "Given a web search query, retrieve relevant passages that answer the query"
SYSTEMS = {
    "st-fp32": "(a) sentence-transformers 6 CrossEncoder, fp32 torch, batch 16",
    "st-bf16": "(a') sentence-transformers 6 CrossEncoder, bf16 torch, batch 16",
    "st-bf16-b128": "(a'') sentence-transformers 6 CrossEncoder, bf16 torch, batch 128 (for a GPU)",
    "reference": "(b) the model card's transformers loop, fp32, batch 16",
    "crossrank": "(c) crossrank CrossEncoder(folder), default settings",
    "crossrank-no-reuse": "(c') crossrank with prefix_reuse=False",
    "crossrank-fp32": "(c'') crossrank with precision='fp32'",
}


def build(folder: Path, tokenizer: Path | None = None) -> None:
    """Write the random model and its tokenizer to ``folder`` (once; later runs reuse it).

    With ``tokenizer``, the tokenizer files are copied from that folder instead of trained.
    """
    import shutil

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if tokenizer is not None:
        tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
        _write_model(folder, tok.token_to_id("<|endoftext|>"))
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "crossrank.json"):
            if (tokenizer / name).is_file():
                shutil.copy(tokenizer / name, folder / name)
        return

    split = (  # Qwen2/Qwen3's own pre-tokenizer split
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    corpus = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage" / "corpus.jsonl"
    texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    texts += ["yes", "no"] * 100
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=32000,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    _write_model(folder, tok.token_to_id("<|endoftext|>"))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>").save_pretrained(
        folder
    )
    (folder / "crossrank.json").write_text(json.dumps({"template": "qwen3-reranker"}), encoding="utf-8")


def _write_model(folder: Path, pad_id: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in QWEN3_RERANKER_06B.items() if k != "architectures"})
    config.architectures = QWEN3_RERANKER_06B["architectures"]
    config.pad_token_id = pad_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # half the disk; loaded as fp32
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)


def load_pairs(queries: int, depth: int) -> list[tuple[str, str, list[str], list[str]]]:
    """Return ``(query id, query, doc ids, doc texts)`` for the first ``queries`` queries of examples/dl19."""
    from crossrank.io import read_run_candidates

    d = ROOT / "examples" / "dl19"
    got = read_run_candidates(d / "bm25.top100.trec", d / "queries.jsonl", d / "corpus.jsonl", depth=depth)
    out = []
    for qid, query, recs in list(zip(got.query_ids, got.queries, got.documents, strict=True))[:queries]:
        out.append((qid, query, [r["id"] for r in recs], [r["text"] for r in recs]))
    return out


def run_system(name: str, folder: Path, queries: int, depth: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    """Time one system, in this process: per-query latencies and the raw log-odds of every pair."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    data = load_pairs(queries, depth)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if name.startswith("st-"):
        from sentence_transformers import CrossEncoder as ST

        dtype = torch.float32 if name == "st-fp32" else torch.bfloat16
        st = ST(str(folder), device=device, model_kwargs={"dtype": dtype})
        batch_size = 128 if name.endswith("-b128") else 16

        def score(query: str, docs: list[str]) -> list[float]:
            pairs = [(f"{PREFIX}<Instruct>: {TASK}\n<Query>: {query}\n", f"<Document>: {d}{SUFFIX}") for d in docs]
            return st.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Identity()).tolist()  # type: ignore[no-any-return]

    elif name == "reference":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        prefix = tok.encode(PREFIX, add_special_tokens=False)
        suffix = tok.encode(SUFFIX, add_special_tokens=False)
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")

        def score(query: str, docs: list[str]) -> list[float]:
            out: list[float] = []
            for start in range(0, len(docs), 16):
                texts = [f"<Instruct>: {TASK}\n<Query>: {query}\n<Document>: {d}" for d in docs[start : start + 16]]
                enc = tok(texts, padding=False, truncation="longest_first", return_attention_mask=False,
                          max_length=8192 - len(prefix) - len(suffix))  # fmt: skip
                batch = tok.pad(
                    {"input_ids": [prefix + x + suffix for x in enc["input_ids"]]}, padding=True, return_tensors="pt"
                )
                with torch.no_grad():
                    last = model(**batch.to(device)).logits[:, -1, :].float().cpu()
                logp = torch.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)
                out.extend((logp[:, 1] - logp[:, 0]).tolist())
            return out

    else:
        from crossrank import CrossEncoder
        from crossrank.rerank.config import ScoringConfig

        config = ScoringConfig(
            threads=threads,
            device=device,
            prefix_reuse=name != "crossrank-no-reuse",
            precision="fp32" if name == "crossrank-fp32" else "auto",
        )
        ce = CrossEncoder(folder, config=config)
        print(f"{name}: {ce.backend_reason}", file=sys.stderr)

        def score(query: str, docs: list[str]) -> list[float]:
            return ce.score([(query, d) for d in docs], activation="none").tolist()  # type: ignore[no-any-return]

    score(data[0][1], data[0][3][:2])  # warm-up
    sync()
    latencies, scores = [], {}
    for qid, query, ids, docs in data:
        t0 = time.perf_counter()
        s = score(query, docs)
        sync()
        latencies.append(time.perf_counter() - t0)
        scores[qid] = dict(zip(ids, map(float, s), strict=True))
    n = sum(len(x[2]) for x in data)
    return {
        "system": name,
        "label": SYSTEMS[name],
        "pairs": n,
        "seconds": sum(latencies),
        "pairs_per_s": n / sum(latencies),
        "p50_ms": float(np.median(latencies) * 1000),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
        "scores": scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", default=",".join(SYSTEMS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    ap.add_argument("--tokenizer", type=Path, default=None, help="copy the tokenizer from this folder")
    ap.add_argument("--system", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from crossrank.cpu import available_cores

    threads = args.threads or available_cores()
    if args.system:
        print(json.dumps(run_system(args.system, FOLDER, args.queries, args.depth, threads, args.device)))
        return
    from rerank_speed import machine

    if not (FOLDER / "config.json").is_file():
        print(f"building the random Qwen3-Reranker-0.6B-sized model in {FOLDER} (once)", file=sys.stderr)
        build(FOLDER, args.tokenizer)
    before = machine()
    results = []
    for name in args.only.split(","):
        cmd = [sys.executable, __file__, "--system", name, "--queries", str(args.queries), "--depth", str(args.depth)]
        cmd += ["--threads", str(threads), "--device", args.device]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        )
        if done.returncode != 0:
            results.append({"system": name, "label": SYSTEMS[name], "error": done.stderr.strip().splitlines()[-1:]})
            print(f"{name}: failed: {done.stderr.strip()[-400:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{name:20s} {r['pairs_per_s']:7.2f} pairs/s  p50 {r['p50_ms']:8.0f} ms  {r['peak_rss_mb']:6.0f} MB",
            file=sys.stderr,
        )
    agreement(results)
    by = {r["system"]: r for r in results if "error" not in r}
    anchor = "st-fp32" if "st-fp32" in by else "reference"
    print(f"\n{'system':20s} {'pairs/s':>8s} {'x anchor':>9s} {'p50 ms':>8s} {'RSS MB':>7s} {'max|d|':>8s} {'tau':>6s}")
    for r in results:
        if "error" in r:
            print(f"{r['system']:20s} failed: {r['error']}")
            continue
        ratio = r["pairs_per_s"] / by[anchor]["pairs_per_s"] if anchor in by else float("nan")
        r["ratio_to_anchor"] = ratio if anchor in by else None
        print(
            f"{r['system']:20s} {r['pairs_per_s']:8.2f} {ratio:8.2f}x {r['p50_ms']:8.0f} {r['peak_rss_mb']:7.0f} "
            f"{r.get('max_abs_diff', float('nan')):8.1e} {r.get('kendall_tau', float('nan')):6.3f}"
        )
    reuse = None
    if "crossrank" in by and "crossrank-no-reuse" in by:
        reuse = by["crossrank"]["pairs_per_s"] / by["crossrank-no-reuse"]["pairs_per_s"]
        print(f"prefix reuse alone: {reuse:.2f}x")
    if args.json:
        for r in results:
            r.pop("scores", None)
        out = {
            "bench": "llm_rerank_speed",
            "model": "Qwen/Qwen3-Reranker-0.6B config, random weights",
            "queries": args.queries,
            "depth": args.depth,
            "threads": threads,
            "device": args.device,
            "gpu": _gpu_name(args.device),
            "anchor": anchor if anchor in by else None,
            "prefix_reuse_speedup": reuse,
            "machine_before": before,
            "machine_after": machine(),
            "results": results,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


def agreement(results: list[dict[str, Any]]) -> None:
    """Add each system's max |log-odds difference| and mean Kendall tau per query against (b)."""
    import numpy as np
    from scipy.stats import kendalltau

    ref = next((r for r in results if r.get("system") == "reference" and "error" not in r), None)
    if ref is None:
        return
    for r in results:
        if "error" in r:
            continue
        diffs, taus = [], []
        for qid, want in ref["scores"].items():
            ids = list(want)
            a = np.array([want[d] for d in ids])
            b = np.array([r["scores"][qid][d] for d in ids])
            diffs.append(float(np.abs(a - b).max()))
            taus.append(float(kendalltau(a, b).statistic))
        r["max_abs_diff"] = max(diffs)
        r["kendall_tau"] = float(np.mean(taus))
        r["kendall_tau_per_query"] = taus


if __name__ == "__main__":
    main()
