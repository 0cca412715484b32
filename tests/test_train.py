"""Training and distillation on real data with tiny models: the loss falls, saved models reload
with the same scores, a killed run resumes, bad input fails before any training time is spent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED
from crossrank import CrossEncoder
from crossrank.errors import ConfigError, InputError, ModelError
from crossrank.train import DevSet, MiningSettings, TrainConfig, mine_groups, read_pairs, read_triples, train
from crossrank.train.data import first_stage_candidates, load_beir
from crossrank.train.distill import distill_groups, layer_student, parse_layers, parse_prune, pruned_student
from crossrank.train.losses import LOSSES, needs_teacher

WIKIQA = SHARED / "wikiqa"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def wikiqa() -> dict[str, object]:
    corpus, queries, qrels = load_beir(WIKIQA, "train")
    cands = first_stage_candidates(WIKIQA / "runs" / "train.candidates.trec", queries, depth=10)
    answered = sorted(q for q in qrels if any(g > 0 for g in qrels[q].values()))
    return {"corpus": corpus, "queries": queries, "qrels": qrels, "candidates": cands, "answered": answered}


def _groups(w: dict, n: int, negatives: int = 3, teacher: CrossEncoder | None = None) -> list:  # type: ignore[type-arg]
    qs = w["answered"][:n]
    qrels = {q: w["qrels"][q] for q in qs}
    return mine_groups(
        w["corpus"], w["queries"], qrels, w["candidates"], settings=MiningSettings(negatives=negatives), teacher=teacher
    )


def _dev(w: dict, first: int, n: int) -> DevSet:  # type: ignore[type-arg]
    qs = w["answered"][first : first + n]
    cands = {q: w["candidates"][q] for q in qs}
    docs = {d: w["corpus"][d]["text"] for ids in cands.values() for d in ids}
    return DevSet(
        queries={q: w["queries"][q] for q in qs}, documents=docs, candidates=cands, qrels={q: w["qrels"][q] for q in qs}
    )


def test_loss_falls_and_the_saved_model_reloads_with_the_same_scores(tiny_models, wikiqa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    groups = _groups(wikiqa, 16)
    dev = _dev(wikiqa, 100, 6)
    cfg = TrainConfig(loss="listwise", epochs=12, batch_size=4, learning_rate=3e-3, warmup=0.05, checkpoint_every=100)
    result = train(tiny_models["bert"], groups, tmp_path / "run", config=cfg, dev=dev)
    losses = [h["loss"] for h in result.history]
    assert result.steps == 48 == len(losses)
    assert np.mean(losses[-8:]) < 0.3 * np.mean(losses[:8])
    assert result.pairs_per_s > 0 and result.best is not None
    # the exported folder is the best step: reloaded by crossrank, it gives the dev value measured in training
    from crossrank.train.finish import dev_value

    assert dev_value(result.model, dev, backend="torch") == pytest.approx(result.best["value"], abs=1e-6)
    assert json.loads((result.model / "config.json").read_text())["crossrank_training"]["step"] == result.best["step"]
    assert "listwise" in (result.model / "README.md").read_text()
    # the same pairs through transformers directly
    from transformers import AutoModelForSequenceClassification

    from crossrank.models.encoding import PairEncoder
    from crossrank.train.trainer import score_with

    net = AutoModelForSequenceClassification.from_pretrained(str(result.model))
    pairs = [(g.query, d) for g in groups[:4] for d in g.documents]
    mine = CrossEncoder(result.model, backend="torch", calibration=None).score(pairs, activation="none")
    enc = PairEncoder(result.model / "tokenizer.json", max_length=256)
    direct = score_with(net, enc, [q for q, _ in pairs], [d for _, d in pairs])
    np.testing.assert_allclose(mine, direct, atol=1e-5)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains_on_real_groups(loss: str, tiny_models, wikiqa, default_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher = default_model if needs_teacher(loss) else None
    groups = _groups(wikiqa, 6, teacher=teacher)
    if loss == "bce":
        groups = read_pairs_from(groups, tmp_path)
    before = {k: v.clone() for k, v in _weights(tiny_models["bert"]).items()}
    cfg = TrainConfig(loss=loss, max_steps=2, batch_size=3, learning_rate=1e-3, checkpoint_every=100, warmup=0.0)
    result = train(tiny_models["bert"], groups, tmp_path / "run", config=cfg)
    assert all(np.isfinite(h["loss"]) and h["loss"] >= 0 for h in result.history)
    after = _weights(result.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def read_pairs_from(groups: list, tmp_path: Path) -> list:  # type: ignore[type-arg]
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as fh:
        for g in groups:
            for d, y in zip(g.documents, g.labels, strict=True):
                fh.write(json.dumps({"query": g.query, "document": d, "label": y}) + "\n")
    return read_pairs(path)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


_TRAIN_SCRIPT = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_train import _groups_for_script
from crossrank.train import TrainConfig, train
groups = _groups_for_script()
cfg = TrainConfig(
    loss="listwise", max_steps=24, batch_size=2, learning_rate=1e-3, checkpoint_every=3, precision="fp32", threads=1
)
slow = float(sys.argv[2])
r = train({model!r}, groups, sys.argv[1], config=cfg, on_step=lambda s, l: time.sleep(slow))
print(json.dumps({{"resumed_from": r.resumed_from, "steps": r.steps, "losses": [h["loss"] for h in r.history]}}))
"""


def _groups_for_script() -> list:  # type: ignore[type-arg]
    corpus, queries, qrels = load_beir(WIKIQA, "train")
    cands = first_stage_candidates(WIKIQA / "runs" / "train.candidates.trec", queries, depth=10)
    qs = sorted(q for q in qrels if any(g > 0 for g in qrels[q].values()))[:12]
    return mine_groups(corpus, queries, {q: qrels[q] for q in qs}, cands, settings=MiningSettings(negatives=3))


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "run.py"
    script.write_text(_TRAIN_SCRIPT.format(tests=str(TESTS), model=str(tiny_models["bert"])))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.4"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = out / "checkpoints"
    while time.time() < deadline and not any(p.name == "step-0000009" for p in ckpts.glob("step-*")):
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in ckpts.glob("step-*") if p.suffix != ".tmp")
    assert done and done[-1] >= "step-0000009"
    resumed = subprocess.run(
        [sys.executable, str(script), str(out), "0"], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    r = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert r["resumed_from"] >= 9 and r["steps"] == 24 and len(r["losses"]) == 24
    # the resumed run ends where an uninterrupted one ends: same data order, dropout and optimizer state
    straight = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "straight"), "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    s = json.loads(straight.stdout.strip().splitlines()[-1])
    assert s["resumed_from"] == 0
    np.testing.assert_allclose(r["losses"], s["losses"], rtol=1e-4, atol=1e-5)


def test_bad_training_input_fails_before_training(tiny_models, wikiqa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_models["bert"]
    cfg = TrainConfig(loss="bce", max_steps=1)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="training set is empty"):
        train(model, read_pairs(empty), tmp_path / "a", config=cfg)
    scores = tmp_path / "sts.jsonl"
    scores.write_text(json.dumps({"sentence1": "a cat", "sentence2": "a feline", "score": 4.2}) + "\n")
    with pytest.raises(InputError, match=r"labels in \[0, 1\].*label-scale"):
        train(model, read_pairs(scores), tmp_path / "b", config=cfg)
    assert read_pairs(scores, label_scale=5)[0].labels == pytest.approx((0.84,))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "document": "d", "label": "yes"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: the label must be a number"):
        read_pairs(bad)
    with pytest.raises(InputError, match="triple needs"):
        (tmp_path / "t.jsonl").write_text(json.dumps({"query": "q", "positive": "p"}) + "\n")
        read_triples(tmp_path / "t.jsonl")
    qrels = {"train-1": {"no-such-passage": 1}}
    with pytest.raises(InputError, match=r"1 judged positives .* not in the corpus .*no-such-passage"):
        mine_groups(wikiqa["corpus"], wikiqa["queries"], qrels, wikiqa["candidates"])
    with pytest.raises(InputError, match=r"kl.*teacher"):
        train(model, _groups(wikiqa, 2), tmp_path / "c", config=TrainConfig(loss="kl", max_steps=1))
    # models that cannot be trained: a 3-label head, an ONNX-only folder, an architecture without a head
    groups = _groups(wikiqa, 2)
    with pytest.raises(ModelError, match="3-label head"):
        train(tiny_models["xlm-roberta"], groups, tmp_path / "d", config=TrainConfig(max_steps=1))
    with pytest.raises(ModelError, match="no trainable weights"):
        train(str(CrossEncoder("default").files.folder), groups, tmp_path / "e", config=TrainConfig(max_steps=1))
    from transformers import ViTConfig, ViTModel

    vit = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(vit)
    (vit / "tokenizer.json").write_bytes((Path(model) / "tokenizer.json").read_bytes())
    with pytest.raises(ModelError, match="no sequence-classification head"):
        train(str(vit), groups, tmp_path / "f", config=TrainConfig(max_steps=1))
    for name in "abcdef":
        assert not (tmp_path / name / "checkpoints").exists()


def test_a_plain_encoder_gets_a_new_head(wikiqa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from crossrank.models.registry import lookup

    minilm = lookup("all-MiniLM-L6-v2").folder()  # type: ignore[union-attr]
    cfg = TrainConfig(loss="listwise", max_steps=2, batch_size=2, checkpoint_every=100)
    result = train(str(minilm), _groups(wikiqa, 4), tmp_path / "run", config=cfg)
    config = json.loads((result.model / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 1
    assert CrossEncoder(result.model, backend="torch").score([("a", "b")]).shape == (1,)


def test_layer_students_keep_teacher_layers(fp32_folder: Path, tmp_path: Path) -> None:
    assert parse_layers("layers:0,2,4,6,8,10", 12) == [0, 2, 4, 6, 8, 10]
    assert parse_layers("layers:6", 12) == [0, 2, 4, 7, 9, 11]
    for bad in ("layers:3,1", "layers:0,12", "layers:x", "layers:13"):
        with pytest.raises(Exception, match=r"layers|cannot keep"):
            parse_layers(bad, 12)
    full = layer_student(fp32_folder, "layers:" + ",".join(map(str, range(12))), tmp_path / "full")
    half = layer_student(fp32_folder, "layers:0,2,4,6,8,10", tmp_path / "half")
    assert json.loads((half / "config.json").read_text())["num_hidden_layers"] == 6
    pairs = [("what is a cat", "A cat is a small feline."), ("what is a cat", "Paris is in France.")]
    teacher = CrossEncoder(fp32_folder, backend="torch").score(pairs, activation="none")
    np.testing.assert_allclose(CrossEncoder(full, backend="torch").score(pairs, activation="none"), teacher, atol=1e-5)
    w = _weights(half)
    src = _weights(fp32_folder)
    assert torch.equal(
        w["bert.encoder.layer.3.attention.self.query.weight"], src["bert.encoder.layer.6.attention.self.query.weight"]
    )
    assert torch.equal(w["classifier.weight"], src["classifier.weight"])


def test_pruned_students_keep_the_teachers_most_important_heads_and_neurons(
    fp32_folder: Path,
    wikiqa,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from scipy.stats import spearmanr

    assert parse_prune("prune:heads=6,ffn=640", heads=12, ffn=1536) == (6, 640)
    assert parse_prune("prune:ffn=768", heads=12, ffn=1536) == (12, 768)
    for bad in ("prune:heads=13", "prune:ffn=0", "prune:width=3", "prune:heads=x"):
        with pytest.raises(Exception, match=r"prune:heads|cannot keep"):
            parse_prune(bad, heads=12, ffn=1536)
    groups = _groups(wikiqa, 12)
    # keeping everything is the teacher itself
    same = pruned_student(fp32_folder, "prune:heads=12,ffn=1536", groups, tmp_path / "same", max_groups=2)
    pairs = [("what is a cat", "A cat is a small feline."), ("what is a cat", "Paris is in France.")]
    teacher = CrossEncoder(fp32_folder, backend="torch")
    np.testing.assert_allclose(
        CrossEncoder(same, backend="torch").score(pairs, activation="none"),
        teacher.score(pairs, activation="none"),
        atol=1e-5,
    )
    small = pruned_student(fp32_folder, "prune:heads=6,ffn=640", groups, tmp_path / "small", max_groups=12)
    config = json.loads((small / "config.json").read_text())
    assert config["intermediate_size"] == 640 and config["num_hidden_layers"] == 12
    assert all(len(v) == 6 for v in config["pruned_heads"].values()) and len(config["pruned_heads"]) == 12
    record = json.loads((small / "prune.json").read_text())
    imp = np.array(record["head_importance"])
    for layer, removed in config["pruned_heads"].items():
        kept = sorted(set(range(12)) - set(removed))
        assert imp[int(layer), kept].min() >= imp[int(layer), removed].max()
    w, src = _weights(small), _weights(fp32_folder)
    rows = src["bert.encoder.layer.5.intermediate.dense.weight"]
    kept_rows = w["bert.encoder.layer.5.intermediate.dense.weight"]
    assert kept_rows.shape == (640, 384)
    match = [int(torch.nonzero((rows == r).all(1))[0]) for r in kept_rows]
    assert match == sorted(match)  # teacher rows, in the teacher's order
    assert torch.equal(w["classifier.weight"], src["classifier.weight"])
    # the pruned student still ranks like the teacher on questions it was not measured on
    qs = wikiqa["answered"][40:60]
    held = [(wikiqa["queries"][q], wikiqa["corpus"][d]["text"]) for q in qs for d in wikiqa["candidates"][q]]
    small_scores = CrossEncoder(small, backend="torch").score(held, activation="none")
    rho = spearmanr(small_scores, teacher.score(held)).statistic
    assert rho > 0.8, rho
    # and exports like any model: the ONNX graph gives the same scores
    from crossrank.models.export import export_optimized

    export_optimized(small, tmp_path / "small-onnx", quantize="none")
    onnx_scores = CrossEncoder(tmp_path / "small-onnx", backend="onnx").score(held, activation="none")
    np.testing.assert_allclose(onnx_scores, small_scores, atol=2e-3)


def test_distill_groups_put_the_teachers_best_first_and_cache_scores(wikiqa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from crossrank.rerank.config import ScoringConfig

    qs = wikiqa["answered"][:5]
    queries = {q: wikiqa["queries"][q] for q in qs}
    cands = {q: wikiqa["candidates"][q] for q in qs}
    docs = {d: wikiqa["corpus"][d] for ids in cands.values() for d in ids}
    teacher = CrossEncoder("default", config=ScoringConfig(activation="none", cache_dir=str(tmp_path / "cache")))
    groups, n = distill_groups(teacher, queries, cands, docs, group_size=4, groups_per_query=2, seed=1)
    assert n == sum(len(v) for v in cands.values())
    assert len(groups) == 2 * len(qs)
    for g in groups:
        assert g.teacher is not None and g.teacher[0] == max(g.teacher) and len(set(g.doc_ids)) == len(g.doc_ids)
        assert len(g.documents) == min(4, len(cands[g.query_id]))
    again = CrossEncoder("default", config=ScoringConfig(activation="none", cache_dir=str(tmp_path / "cache")))
    g2, _ = distill_groups(again, queries, cands, docs, group_size=4, groups_per_query=2, seed=1)
    assert [g.teacher for g in g2] == [g.teacher for g in groups]
    assert again.cache is not None and again.cache.hits >= n


def test_cli_distill_runs_the_whole_recipe(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from crossrank.cli.app import app

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        textwrap.dedent(
            f"""
            teacher = "default"
            student = "{tiny_models["bert"]}"
            output = "out"
            group_size = 4
            groups_per_query = 1
            export = "int8"
            [train]
            loss = "margin-mse"
            max_steps = 3
            batch_size = 4
            [dev]
            data = "{SHARED / "trecqa"}"
            split = "dev"
            run = "runs/dev.candidates.trec"
            depth = 10
            max_queries = 4
            [[source]]
            data = "{WIKIQA}"
            split = "train"
            run = "runs/train.candidates.trec"
            depth = 8
            max_queries = 6
            pool = "{SHARED / "trec-dl-2021-passage"}"
            pool_depth = 2
            [[source]]                  # queries alone (a query log): candidates from the pool only
            data = "log"
            split = "all"
            pool = "{SHARED / "trec-dl-2021-passage"}"
            pool_depth = 5
            groups_per_query = 2
            """
        )
    )
    log = tmp_path / "log"
    log.mkdir()
    lines = (SHARED / "trec-dl-2021-passage" / "queries.jsonl").read_text().splitlines()[:3]
    (log / "queries.jsonl").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["distill", "--recipe", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    wiki, logged = summary["data"]["sources"]
    assert wiki["queries"] == 6 and wiki["groups"] == 6 and wiki["pairs"] > 6 * 2
    assert logged["split"] is None and logged["queries"] == 3 and logged["pairs"] == 15 and logged["groups"] == 6
    assert summary["train"]["steps"] == 3
    exp = summary["export"]
    assert exp["quantize"] in ("int8", "bf16") and set(exp) >= {"dev_fp32", "dev_int8"}
    onnx = CrossEncoder(tmp_path / "out" / "onnx", backend="onnx")
    torch_scores = CrossEncoder(tmp_path / "out" / "train" / "model", backend="torch").score([("q a", "an answer")])
    assert abs(float(onnx.score([("q a", "an answer")])[0]) - float(torch_scores[0])) < 0.05
    bad = CliRunner().invoke(app, ["distill", "--recipe", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2 and "cannot read recipe" in bad.output


def test_distill_sources_say_what_is_missing(tmp_path: Path) -> None:
    from crossrank.train.distill import Source, source_candidates

    pool = str(SHARED / "trec-dl-2021-passage")
    with pytest.raises(InputError, match=r"no queries.jsonl; create it with: python recipes/msmarco_queries.py"):
        source_candidates(
            Source(
                str(tmp_path / "absent"),
                split=None,
                pool=pool,
                pool_depth=5,
                prepare="python recipes/msmarco_queries.py",
            )
        )
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "what is a cross-encoder"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl is missing .*needs a pool"):
        source_candidates(Source(str(tmp_path), split=None))
    with pytest.raises(InputError, match="has no split 'train'"):
        source_candidates(Source(str(tmp_path), pool=pool, pool_depth=5))
    with pytest.raises(ConfigError, match="groups_per_query must be >= 1"):
        Source(str(tmp_path), groups_per_query=0)


def test_distill_source_mines_candidates_with_any_first_stage(cisi_slice, hybrid_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A queries-only source finds pool candidates with the retriever it names (hybrid: the hybrid index's top)."""
    from crossrank.train.distill import Source, source_candidates

    texts = ["retrieval of documents by computer", "library circulation and loan policy", "citation indexing"]
    lines = [json.dumps({"_id": f"q{i}", "text": t}) for i, t in enumerate(texts)]
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    found = {
        r: source_candidates(Source(str(tmp_path), split=None, pool=str(cisi_slice), pool_depth=5, retriever=r))[1]
        for r in ("bm25", "hybrid")
    }
    expect = hybrid_index.retrieve(texts, k=5, retriever="hybrid")
    for i, c in enumerate(expect):
        assert found["hybrid"][f"q{i}"] == [f"pool:{d}" for d in hybrid_index.doc_ids(c.slots)]
    assert found["bm25"] != found["hybrid"]  # the retriever is not ignored
    with pytest.raises(ConfigError, match="retriever must be bm25, dense or hybrid"):
        Source(str(tmp_path), retriever="splade")


def test_cli_train_mines_from_bm25_when_no_candidates_are_given(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`crossrank train --data` without --candidates searches the corpus itself (BM25) for negatives."""
    from typer.testing import CliRunner

    from crossrank.cli.app import app

    args = ["train", "--model", str(tiny_models["bert"]), "--data", str(WIKIQA), "--depth", "10", "--loss", "listwise"]
    args += ["--output", str(tmp_path / "o"), "--max-steps", "2", "--export", "skip", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["steps"] == 2 and summary["mining"]["groups"] > 100, summary


def test_cli_train_on_pairs_refuses_two_training_sets(tiny_models, wikiqa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from crossrank.cli.app import app

    read_pairs_from(_groups(wikiqa, 4), tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    runner = CliRunner()
    args = ["train", "--model", str(tiny_models["bert"]), "--pairs", str(pairs), "--loss", "bce"]
    ok = runner.invoke(
        app, [*args, "--output", str(tmp_path / "o"), "--max-steps", "2", "--export", "skip", "--no-progress"]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output[ok.output.index("{") :])["steps"] == 2
    both = runner.invoke(app, [*args, "--triples", str(pairs), "--output", str(tmp_path / "x")])
    assert both.exit_code == 2 and "exactly one training set" in both.output
