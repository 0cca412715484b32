"""Tiny randomly initialised decoder and T5 rerankers, built locally with their real configs' shapes.

Tokenizers are trained here on real DL 2019 passages: byte-level BPE with Qwen's chat tokens for
the Qwen models, BPE with ``<bos>`` for Gemma, and a SentencePiece-style Unigram with ``</s>``
for T5. The words the templates read scores from ("yes", "no", "1", "0", "Yes", "true",
"false") are frequent in the training text, so each is one token, as in the real vocabularies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerFast,
)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
SCORE_WORDS = "yes no 1 0 Yes No true false Relevant Query Document Instruct"


def _texts() -> list[str]:
    from conftest import DL19

    lines = (DL19 / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:3000]
    # each word alone too, so it is one token with no leading space ("yes", not " yes")
    return [json.loads(line)["text"] for line in lines] + ([SCORE_WORDS, *SCORE_WORDS.split()]) * 300


# Qwen2/Qwen3's own pre-tokenizer (their tokenizer.json): NFC, this split, then bytes
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_bpe(texts: list[str], specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _unigram(texts: list[str], specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=1200, special_tokens=specials, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # T5's real vocabulary holds "▁true" and "▁false" whole; give the trained one any it split
    model = json.loads(tok.to_str())["model"]
    vocab = [(piece, score) for piece, score in model["vocab"]]
    have = {piece for piece, _ in vocab}
    best = max(score for piece, score in vocab if piece not in specials)
    vocab += [(f"\u2581{w}", best) for w in SCORE_WORDS.split() if f"\u2581{w}" not in have]
    tok.model = models.Unigram(vocab, unk_id=model["unk_id"], byte_fallback=False)
    return tok


def _widen(model: Any, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():  # random init leaves logits near zero; widen them so orders differ visibly
        for p in model.parameters():
            p.normal_(0.0, 0.2)


def _save(folder: Path, model: Any, tok: Tokenizer, specials: dict[str, str], settings: dict[str, Any] | None) -> Path:
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(folder)
    if settings is not None:
        (folder / "crossrank.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


def _decoder(model_type: str, vocab: int, pad: int, **extra: Any) -> Any:
    return AutoConfig.for_model(
        model_type,
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        pad_token_id=pad,
        tie_word_embeddings=True,
        **extra,
    )


def build_all(root: Path) -> dict[str, Path]:
    """Return {name: folder} for tiny qwen3 (causal LM), qwen2 (mxbai v2), gemma, qwen3-seq-cls and t5."""
    texts = _texts()
    qwen_tok = _byte_bpe(texts, QWEN_SPECIALS)
    qpad = qwen_tok.token_to_id("<|endoftext|>")
    qwen_specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    out: dict[str, Path] = {}

    config = _decoder("qwen3", qwen_tok.get_vocab_size(), qpad, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
    config.architectures = ["Qwen3ForCausalLM"]
    model = AutoModelForCausalLM.from_config(config)
    _widen(model, 3)
    out["qwen3"] = _save(root / "qwen3", model, qwen_tok, qwen_specials, {"template": "qwen3-reranker"})

    config = _decoder("qwen2", qwen_tok.get_vocab_size(), qpad, rope_theta=1_000_000.0)
    config.architectures = ["Qwen2ForCausalLM"]
    model = AutoModelForCausalLM.from_config(config)
    _widen(model, 2)
    out["qwen2"] = _save(root / "qwen2", model, qwen_tok, qwen_specials, {"template": "mxbai-rerank-v2"})

    gemma_tok = _byte_bpe(texts, ["<pad>", "<eos>", "<bos>", "<unk>"])
    config = _decoder("gemma", gemma_tok.get_vocab_size(), gemma_tok.token_to_id("<pad>"))
    config.bos_token_id = gemma_tok.token_to_id("<bos>")
    config.eos_token_id = gemma_tok.token_to_id("<eos>")
    config.architectures = ["GemmaForCausalLM"]
    model = AutoModelForCausalLM.from_config(config)
    _widen(model, 5)
    gemma_specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    out["gemma"] = _save(root / "gemma", model, gemma_tok, gemma_specials, {"template": "bge-reranker-gemma"})

    config = _decoder("qwen3", qwen_tok.get_vocab_size(), qpad, num_labels=1)
    config.architectures = ["Qwen3ForSequenceClassification"]
    model = AutoModelForSequenceClassification.from_config(config)
    _widen(model, 7)
    out["qwen3-seq-cls"] = _save(root / "qwen3-seq-cls", model, qwen_tok, qwen_specials, {"template": "qwen3-reranker"})

    t5_tok = _unigram(texts, ["<pad>", "</s>", "<unk>"])
    config = AutoConfig.for_model(
        "t5",
        vocab_size=t5_tok.get_vocab_size(),
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        num_heads=4,
        pad_token_id=t5_tok.token_to_id("<pad>"),
        eos_token_id=t5_tok.token_to_id("</s>"),
        decoder_start_token_id=t5_tok.token_to_id("<pad>"),
    )
    config.architectures = ["T5ForConditionalGeneration"]
    model = AutoModelForSeq2SeqLM.from_config(config)
    _widen(model, 11)
    out["t5"] = _save(
        root / "t5", model, t5_tok, {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}, None
    )
    return out
