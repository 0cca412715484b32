"""Tiny randomly initialised cross-encoders in several architectures, built locally.

Each has a real tokenizer of its family: WordPiece on the default model's real BERT vocab, and
byte-level BPE or Unigram trained here on real DL 2019 passages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerFast,
)

from crossrank.models.registry import lookup

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _texts() -> list[str]:
    from conftest import DL19

    lines = (DL19 / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:3000]
    return [json.loads(line)["text"] for line in lines]


def _wordpiece() -> Tokenizer:
    folder = lookup("default").folder()  # type: ignore[union-attr]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _bpe(texts: list[str], specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False))
    return tok


def _unigram(texts: list[str], specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts,
        trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token="<unk>", show_progress=False),
    )
    return tok


def _save(
    folder: Path,
    tok: Tokenizer,
    model_type: str,
    extra: dict[str, Any],
    specials: dict[str, str],
    input_names: list[str],
) -> Path:
    folder.mkdir(parents=True)
    config = AutoConfig.for_model(model_type, vocab_size=tok.get_vocab_size(), **extra)
    torch.manual_seed(sum(map(ord, model_type)))
    model = AutoModelForSequenceClassification.from_config(config)
    # random init leaves the head near zero; widen it so order differences are visible
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.save_pretrained(folder)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=input_names, **specials)
    fast.save_pretrained(folder)
    return folder


def build_all(root: Path) -> dict[str, Path]:
    """Return {architecture: folder} for tiny BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, ModernBERT."""
    texts = _texts()
    wp = _wordpiece()
    bert_specials = {
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
    }
    rob_list = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    rob_specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    }
    bpe = _bpe(texts, rob_list)
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    uni = _unigram(texts, rob_list)
    uni.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", uni.token_to_id("<s>")), ("</s>", uni.token_to_id("</s>"))],
    )
    mb_list = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]
    mbt = _bpe(texts, mb_list)
    mbt.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", mbt.token_to_id("[CLS]")), ("[SEP]", mbt.token_to_id("[SEP]"))],
    )
    two = ["input_ids", "attention_mask"]
    three = ["input_ids", "token_type_ids", "attention_mask"]
    out = {
        "bert": _save(root / "bert", wp, "bert", {**SMALL, "num_labels": 1}, bert_specials, three),
        "electra": _save(
            root / "electra",
            wp,
            "electra",
            {**SMALL, "embedding_size": 16, "num_labels": 1},
            bert_specials,
            three,
        ),
        "distilbert": _save(
            root / "distilbert",
            wp,
            "distilbert",
            {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "num_labels": 1},
            bert_specials,
            two,
        ),
        "roberta": _save(
            root / "roberta",
            bpe,
            "roberta",
            {
                **SMALL,
                "num_labels": 1,
                "pad_token_id": bpe.token_to_id("<pad>"),
                "type_vocab_size": 1,
                "max_position_embeddings": 130,
            },
            rob_specials,
            two,
        ),
        "xlm-roberta": _save(
            root / "xlm-roberta",
            uni,
            "xlm-roberta",
            {
                **SMALL,
                "pad_token_id": uni.token_to_id("<pad>"),
                "type_vocab_size": 1,
                "max_position_embeddings": 130,
                "num_labels": 3,
                "id2label": {0: "contradiction", 1: "entailment", 2: "neutral"},
                "label2id": {"contradiction": 0, "entailment": 1, "neutral": 2},
            },
            rob_specials,
            two,
        ),
    }
    out["modernbert"] = _save(
        root / "modernbert",
        mbt,
        "modernbert",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "num_labels": 1,
            "pad_token_id": mbt.token_to_id("[PAD]"),
            "cls_token_id": mbt.token_to_id("[CLS]"),
            "sep_token_id": mbt.token_to_id("[SEP]"),
            "bos_token_id": mbt.token_to_id("[CLS]"),
            "eos_token_id": mbt.token_to_id("[SEP]"),
            "global_attn_every_n_layers": 1,
            "local_attention": 16,
            "reference_compile": False,
        },
        {
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "mask_token": "[MASK]",
        },
        two,
    )
    return out
