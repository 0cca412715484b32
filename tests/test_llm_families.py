"""Decoder (LLM) and T5 rerankers score exactly as their model cards' reference code does.

Each reference below is written from the model card's (or its library's) recipe with plain
transformers, on tiny random models with real configs and locally trained tokenizers
(tests/tiny_llms.py); crossrank must agree within 1e-4 in fp32, for batch sizes 1, 3 and 64,
in shuffled order, and build the same tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from crossrank import CrossEncoder
from crossrank.errors import ConfigError
from crossrank.rerank.config import ScoringConfig
from crossrank.rerank.templates import TEMPLATES

# the parity tests compare fp32 with fp32: `auto` is bf16 on CPUs with native bf16
FP32 = ScoringConfig(precision="fp32")

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.fixture(scope="module")
def llms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_llms import build_all

    return build_all(tmp_path_factory.mktemp("llms"))


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    from conftest import DL19

    queries = [json.loads(x)["text"] for x in (DL19 / "queries.jsonl").read_text().splitlines()[:8]]
    docs = [json.loads(x)["text"] for x in (DL19 / "corpus.jsonl").read_text().splitlines()[:40]]
    rng = random.Random(5)
    return [(rng.choice(queries), rng.choice(docs)) for _ in range(64)]


# ---------------------------------------------------------------- references, from the model cards


def qwen3_reference(folder: Path, pairs: list[tuple[str, str]], max_length: int = 8192, instruction: str = QWEN3_TASK):
    """Qwen/Qwen3-Reranker model card: P("yes") of a softmax over the last position's ("no", "yes") logits."""
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prefix = tok.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix = tok.encode(QWEN3_SUFFIX, add_special_tokens=False)
    texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    enc = tok(texts, padding=False, truncation="longest_first", return_attention_mask=False,
              max_length=max_length - len(prefix) - len(suffix))  # fmt: skip
    ids = [prefix + x + suffix for x in enc["input_ids"]]
    batch = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).logits[:, -1, :]
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    probs = torch.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)[:, 1].exp()
    return probs.numpy(), ids


def mxbai_reference(folder: Path, pairs: list[tuple[str, str]]):
    """mxbai-rerank v2 (the mxbai-rerank package): logit("1") - logit("0") after its chat prompt."""
    t = TEMPLATES["mxbai-rerank-v2"]
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def ids(x: str) -> list[int]:
        return tok(x, add_special_tokens=False)["input_ids"]

    rows = [
        ids(t.prefix[0]) + ids(f"query: {q}") + ids("\n") + ids(f"document: {d}") + ids("\n") + ids(t.suffix[1])
        + ids(t.suffix[2])
        for q, d in pairs
    ]  # fmt: skip
    batch = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).logits[:, -1, :]
    return (last[:, ids("1")[0]] - last[:, ids("0")[0]]).numpy(), rows


def gemma_reference(folder: Path, pairs: list[tuple[str, str]]):
    """BAAI/bge-reranker-v2-gemma (FlagEmbedding): the logit of "Yes" after its prompt."""
    prompt = TEMPLATES["bge-reranker-gemma"].suffix[1]
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def ids(x: str) -> list[int]:
        return tok(x, add_special_tokens=False)["input_ids"]

    rows = [
        [tok.bos_token_id, *ids(f"A: {q}"), *ids("\n"), *ids(f"B: {d}"), *ids("\n"), *ids(prompt)] for q, d in pairs
    ]
    batch = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).logits[:, -1, :]
    return last[:, ids("Yes")[0]].numpy(), rows


def seq_cls_reference(folder: Path, pairs: list[tuple[str, str]]):
    """Qwen3-Reranker-seq-cls conversions: the 1-logit head at the last token of the formatted pair."""
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [f"{QWEN3_PREFIX}<Instruct>: {QWEN3_TASK}\n<Query>: {q}\n<Document>: {d}{QWEN3_SUFFIX}" for q, d in pairs]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy(), None


def t5_reference(folder: Path, pairs: list[tuple[str, str]]):
    """castorini/monot5 (pygaggle): softmax of "true" against "false" at the first decoder step."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = [tok(f"Query: {q} Document: {d} Relevant:", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for q, d in pairs]  # fmt: skip
    batch = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    true_id = tok("true", add_special_tokens=False)["input_ids"][0]
    false_id = tok("false", add_special_tokens=False)["input_ids"][0]
    start = torch.full((len(rows), 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=start).logits[:, 0, :]
    probs = torch.softmax(torch.stack([logits[:, true_id], logits[:, false_id]], dim=1), dim=1)[:, 0]
    return probs.numpy(), rows


# kind of score each reference returns: a probability (compared after crossrank's sigmoid) or a raw logit
CASES = {
    "qwen3": (qwen3_reference, "sigmoid"),
    "qwen2": (mxbai_reference, "none"),
    "gemma": (gemma_reference, "none"),
    "qwen3-seq-cls": (seq_cls_reference, "none"),
    "t5": (t5_reference, "sigmoid"),
}


# T5's encoder reads the whole input at once: it has no prefix to reuse, so it runs once
RUNS = [(name, reuse) for name in CASES for reuse in (True, False) if name != "t5" or reuse]


@pytest.mark.parametrize(("name", "reuse"), RUNS, ids=[f"{n}-{'reuse' if r else 'plain'}" for n, r in RUNS])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_scores_equal_the_model_cards_reference(llms, pairs, name: str, batch: int, reuse: bool) -> None:
    reference, activation = CASES[name]
    expected, _ = reference(llms[name], pairs)
    ce = CrossEncoder(llms[name], config=ScoringConfig(max_batch_size=batch, prefix_reuse=reuse, precision="fp32"))
    order = list(range(len(pairs)))
    random.Random(batch).shuffle(order)
    got = ce.score([pairs[i] for i in order], activation=activation)
    assert np.abs(got - expected[order]).max() < 1e-4
    if name != "t5":  # 64 pairs of 8 queries: every query's pairs run on its shared prefix, or none do
        assert ce.scorer.pairs_on_shared_prefix == (len(pairs) if reuse else 0)
    # the references' spread is wide enough for the order to mean something
    assert np.std(expected) > 10 * 1e-4


@pytest.mark.parametrize("name", ["qwen3", "qwen2", "gemma", "t5"])
def test_the_tokens_are_the_references_token_for_token(llms, pairs, name: str) -> None:
    reference, _ = CASES[name]
    picked = [*pairs[:11], (pairs[0][0], "a b c " * 3)]
    _, expected = reference(llms[name], picked)
    ce = CrossEncoder(llms[name])
    built = ce.scorer.tokens([q for q, _ in picked], [d for _, d in picked])
    assert built.ids == expected
    assert not built.truncated.any()


def test_a_cut_document_is_cut_as_qwen3s_reference_cuts_it_and_the_suffix_stays(llms, pairs) -> None:
    long_doc = " ".join(d for _, d in pairs[:6])
    picked = [(pairs[0][0], long_doc), (pairs[1][0], "a short passage")]
    expected_scores, expected = qwen3_reference(llms["qwen3"], picked, max_length=160)
    ce = CrossEncoder(llms["qwen3"], config=ScoringConfig(max_length=160, precision="fp32"))
    built = ce.scorer.tokens([q for q, _ in picked], [d for _, d in picked])
    assert built.ids == expected
    assert built.truncated.tolist() == [True, False] and built.lengths[0] == 160
    suffix = ce.scorer.prompts.tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False).ids
    assert built.ids[0][-len(suffix) :] == suffix
    details = ce.score_details(picked, activation="sigmoid")
    assert details.truncated.tolist() == [True, False]
    assert np.abs(details.scores - expected_scores).max() < 1e-4


def test_an_instruction_per_call_is_the_references_instruction(llms, pairs) -> None:
    task = "Given a question, find passages that contradict it"
    expected, _ = qwen3_reference(llms["qwen3"], pairs[:5], instruction=task)
    ce = CrossEncoder(llms["qwen3"], config=FP32)
    got = ce.score(pairs[:5], activation="sigmoid", instruction=task)
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(ce.score(pairs[:5], activation="sigmoid") - expected).max() > 1e-4
    same_query = [(pairs[0][0], d) for _, d in pairs[:5]]
    want = ce.score(same_query, instruction=task)
    ranking = ce.rerank(pairs[0][0], [d for _, d in same_query], instruction=task)
    assert [h.index for h in ranking.hits] == np.argsort(-want, kind="stable").tolist()
    assert [h.score for h in ranking.hits] == pytest.approx(np.sort(want)[::-1].tolist(), abs=1e-6)


def test_families_come_from_the_files_and_errors_say_what_to_do(llms, tmp_path) -> None:
    import shutil

    assert CrossEncoder(llms["qwen3"]).scorer.family == "causal-lm"
    assert CrossEncoder(llms["qwen3-seq-cls"]).scorer.family == "decoder-classification"
    assert CrossEncoder(llms["t5"]).scorer.family == "t5"
    # a causal LM whose files name no template: the error says how to give one
    bare = tmp_path / "bare"
    shutil.copytree(llms["qwen3"], bare)
    (bare / "crossrank.json").unlink()
    with pytest.raises(ConfigError, match="needs a prompt template: pass template="):
        CrossEncoder(bare)
    assert CrossEncoder(bare, template="qwen3-reranker").scorer.template.name == "qwen3-reranker"
    # family= that contradicts the config
    with pytest.raises(ConfigError, match="contradicts"):
        CrossEncoder(llms["qwen3"], family="t5")
    # an instruction for a template without one, and for an encoder cross-encoder
    with pytest.raises(ConfigError, match="takes no instruction"):
        CrossEncoder(llms["gemma"]).score([("q", "d")], instruction="find answers")
    with pytest.raises(ConfigError, match="takes no instruction"):
        CrossEncoder("default").score([("q", "d")], instruction="find answers")
    # a template whose score token the vocabulary lacks
    with pytest.raises(ConfigError, match="no single token"):
        CrossEncoder(bare, template={"base": "qwen3-reranker", "positive": "zzyzx-not-a-token"})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["qwen3", "qwen3-seq-cls"])
def test_sentence_transformers_loads_the_same_folder_and_agrees(llms, pairs, name: str) -> None:
    from sentence_transformers import CrossEncoder as STCrossEncoder

    # as the seq-cls conversions' model cards call it: the template split into a query and a document text
    formatted = [
        (f"{QWEN3_PREFIX}<Instruct>: {QWEN3_TASK}\n<Query>: {q}\n", f"<Document>: {d}{QWEN3_SUFFIX}") for q, d in pairs
    ]
    st = STCrossEncoder(str(llms[name]), device="cpu")
    expected = st.predict(formatted, activation_fn=torch.nn.Identity(), batch_size=16)
    got = CrossEncoder(llms[name], config=FP32).score(pairs, activation="none")
    assert np.abs(got - np.asarray(expected)).max() < 1e-4


def test_the_cli_takes_a_template_and_an_instruction(llms, pairs, tmp_path) -> None:
    from test_cli import crossrank

    folder = tmp_path / "copy"
    import shutil

    shutil.copytree(llms["qwen3"], folder)
    (folder / "crossrank.json").unlink()
    task = "Find passages that define the term"
    query, docs = pairs[0][0], [pairs[0][1], pairs[1][1]]
    done = crossrank(
        "rerank", query, *docs, "--model", str(folder), "--template", "qwen3-reranker", "--instruction", task
    )
    assert done.returncode == 0, done.stderr
    got = {json.loads(line)["index"]: json.loads(line)["score"] for line in done.stdout.splitlines()}
    want = CrossEncoder(folder, template="qwen3-reranker").score([(query, d) for d in docs], instruction=task)
    assert [got[0], got[1]] == pytest.approx(want.tolist(), abs=1e-5)
    # an instruction for a model that takes none: one line, no traceback
    done = crossrank("rerank", query, *docs, "--instruction", task)
    assert done.returncode != 0 and "takes no instruction" in done.stderr and "Traceback" not in done.stderr


def test_export_and_training_refuse_a_decoder_in_one_line(llms, tmp_path) -> None:
    from crossrank.models.export import export_onnx
    from crossrank.train.trainer import load_trainable

    for name in ("qwen3", "qwen3-seq-cls", "t5"):
        with pytest.raises(ConfigError, match=r"cannot export .* yet: only encoder cross-encoders"):
            export_onnx(llms[name], tmp_path / f"out-{name}")
        with pytest.raises(ConfigError, match=r"cannot train .* yet"):
            load_trainable(llms[name], tmp_path / "work")


def test_a_model_too_large_for_the_memory_left_is_refused_before_loading(llms, tmp_path, monkeypatch) -> None:
    import crossrank.cpu
    from crossrank.cpu import available_memory
    from crossrank.models.source import weights_parameters

    params = weights_parameters(llms["qwen3"])
    assert params is not None and params > 100_000
    monkeypatch.setattr(crossrank.cpu, "available_memory", lambda: params * 4 - 1)
    with pytest.raises(ConfigError, match=r"GiB in fp32, and this process has .* GiB left"):
        CrossEncoder(llms["qwen3"], config=FP32)
    monkeypatch.undo()
    # what is left: MemAvailable, or a cgroup v2 / v1 limit minus its usage, whichever is smaller
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2048 kB\n")
    v2 = tmp_path / "v2"
    (v2 / "app").mkdir(parents=True)
    (v2 / "app" / "memory.max").write_text("1500000\n")
    (v2 / "app" / "memory.current").write_text("1000000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/app\n")
    assert available_memory(meminfo, v2, proc) == 500_000
    (v2 / "app" / "memory.max").write_text("max\n")
    assert available_memory(meminfo, v2, proc) == 2048 * 1024
    v1 = tmp_path / "v1"
    (v1 / "memory" / "app").mkdir(parents=True)
    (v1 / "memory" / "app" / "memory.limit_in_bytes").write_text("3000000\n")
    (v1 / "memory" / "app" / "memory.usage_in_bytes").write_text("1000000\n")
    proc.write_text("4:memory:/app\n")
    assert available_memory(meminfo, v1, proc) == 2_000_000


@pytest.mark.parametrize("name", ["qwen3", "t5"])
def test_decoder_and_t5_rerankers_serve_every_api_shape_and_run_in_the_pipeline(llms, pairs, name: str) -> None:
    import httpx

    from crossrank.pipeline import Pipeline
    from crossrank.retrieve.testing import DictFirstStage
    from crossrank.serve import create_app
    from test_serve import serving

    query = pairs[0][0]
    texts = [d for _, d in pairs[:6]]
    library = CrossEncoder(llms[name]).rerank(query, texts)
    want_order = [h.index for h in library.hits]
    want_scores = [h.score for h in library.hits]
    with serving(create_app(CrossEncoder(llms[name]))) as base:
        v1 = httpx.post(f"{base}/v1/rerank", json={"query": query, "documents": texts}, timeout=60).json()
        v2 = httpx.post(f"{base}/v2/rerank", json={"query": query, "documents": texts}, timeout=60).json()
        tei = httpx.post(f"{base}/rerank", json={"query": query, "texts": texts}, timeout=60).json()
    for got in (v1["results"], v2["results"]):
        assert [r["index"] for r in got] == want_order
        assert [r["relevance_score"] for r in got] == pytest.approx(want_scores, abs=1e-6)
    assert [r["index"] for r in tei] == want_order
    assert [r["score"] for r in tei] == pytest.approx(want_scores, abs=1e-6)
    stage = DictFirstStage({f"d{i}": t for i, t in enumerate(texts)})
    result = Pipeline(stage, reranker=CrossEncoder(llms[name])).search(query, k=3, depth=6)
    candidates = stage.retrieve([query], k=6)[0].doc_ids
    expected = CrossEncoder(llms[name]).rerank(query, [{"id": d, "text": stage.documents[d]} for d in candidates], k=3)
    assert result.doc_ids() == expected.doc_ids()


def test_half_precision_weights_still_score_in_fp32_and_a_missing_device_is_named(llms, pairs) -> None:
    from scipy.stats import kendalltau

    full = CrossEncoder(llms["qwen3"], config=ScoringConfig(precision="fp32")).score(pairs, activation="none")
    half = CrossEncoder(llms["qwen3"], config=ScoringConfig(precision="bf16"))
    assert half.scorer.model.dtype == torch.bfloat16 and half.scorer._head.dtype == torch.float32
    got = half.score(pairs, activation="none")
    assert got.dtype == np.float32
    assert np.abs(got - full).max() < 0.25 and kendalltau(got, full).statistic > 0.8
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"torch sees no CUDA device"):
            CrossEncoder(llms["qwen3"], config=ScoringConfig(device="cuda"))
    with pytest.raises(ConfigError, match=r"device must be"):
        ScoringConfig(device="tpu")


def test_the_http_rerank_endpoints_take_an_instruction_per_request(llms, pairs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from crossrank.serve import create_app
    from test_serve import serving

    query = pairs[0][0]
    texts = [d for _, d in pairs[:5]]
    tasks = ["Find passages that define the term", "Find passages that contradict the claim"]
    ce = CrossEncoder(llms["qwen3"])
    want = {t: ce.rerank(query, texts, instruction=t) for t in tasks}
    assert want[tasks[0]].hits[0].score != pytest.approx(want[tasks[1]].hits[0].score, abs=1e-6)
    with serving(create_app(CrossEncoder(llms["qwen3"]))) as base:

        def ask(task: str) -> dict:
            body = {"query": query, "documents": texts, "instruction": task}
            return httpx.post(f"{base}/v1/rerank", json=body, timeout=60).json()

        with ThreadPoolExecutor(4) as pool:  # requests of two instructions side by side, batched apart
            answers = list(pool.map(ask, tasks * 3))
        for task, got in zip(tasks * 3, answers, strict=True):
            assert [r["index"] for r in got["results"]] == [h.index for h in want[task].hits]
            assert [r["relevance_score"] for r in got["results"]] == pytest.approx(
                [h.score for h in want[task].hits], abs=1e-6
            )
        tei = httpx.post(
            f"{base}/rerank", json={"query": query, "texts": texts, "instruction": tasks[1]}, timeout=60
        ).json()
        assert [r["index"] for r in tei] == [h.index for h in want[tasks[1]].hits]
    # a model that takes no instruction answers 400 in the calling shape
    with serving(create_app(CrossEncoder(llms["gemma"]))) as base:
        bad = httpx.post(f"{base}/v2/rerank", json={"query": query, "documents": texts, "instruction": "x"}, timeout=60)
    assert bad.status_code == 400 and "is not taken by" in bad.text


def test_eval_rerank_diagnoses_a_decoder_given_its_template(llms, tmp_path) -> None:
    import shutil

    from test_cli import crossrank

    folder = tmp_path / "copy"
    shutil.copytree(llms["qwen3"], folder)
    (folder / "crossrank.json").unlink()
    examples = Path(__file__).resolve().parents[1] / "examples" / "dl19"
    out = tmp_path / "report.json"
    args = ["eval", "--data", str(examples), "--run", str(examples / "bm25.top100.trec"), "--rerank", str(folder)]
    args += ["--depth", "5", "--depths", "5", "--json", str(out)]
    refused = crossrank(*args)
    assert refused.returncode != 0 and "needs a prompt template" in refused.stderr
    done = crossrank(*args, "--template", "qwen3-reranker", "--instruction", "Find passages that answer")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    # the decoder scored the pairs: its own limit (the tiny Qwen3's 4,096 positions), and an order of its own
    assert report["truncation"]["max_length"] == 4096 and report["truncation"]["pairs"] == 1000
    ndcg = report["comparison"]["nDCG@10"]
    assert ndcg["queries"] == 10 and ndcg["system"] != pytest.approx(ndcg["baseline"], abs=1e-9)


@pytest.mark.parametrize(
    ("flags", "want"), [({"avx2", "avx512_bf16"}, "bf16"), ({"avx2", "amx_bf16"}, "bf16"), ({"avx2"}, "fp32")]
)
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(llms, pairs, monkeypatch, flags, want) -> None:
    import crossrank.rerank.decoder as decoder

    monkeypatch.setattr(decoder, "cpu_flags", lambda: frozenset(flags))
    ce = CrossEncoder(llms["qwen3"])
    assert ce.scorer.model.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[want]
    assert ce.backend_reason.startswith(f"torch {want} on the CPU") and ("native bf16" in ce.backend_reason)
    # the same choice for T5, and an explicit precision wins over the CPU's
    assert CrossEncoder(llms["t5"]).scorer.model.dtype == ce.scorer.model.dtype
    assert CrossEncoder(llms["qwen3"], config=FP32).scorer.model.dtype == torch.float32


def test_a_gpu_takes_larger_batches_unless_the_settings_say_otherwise() -> None:
    from crossrank.rerank.decoder import GPU_MAX_BATCH_SIZE, GPU_TOKEN_BUDGET, batch_limits

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    default = ScoringConfig()
    assert batch_limits(default, cpu) == (default.token_budget, default.max_batch_size)
    assert batch_limits(default, gpu) == (GPU_TOKEN_BUDGET, GPU_MAX_BATCH_SIZE)
    assert batch_limits(ScoringConfig(max_batch_size=4, token_budget=1024), gpu) == (1024, 4)
