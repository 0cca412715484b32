"""What a model's tokenizer and config say about its inputs: pad id, usable length, segment ids.

The cross-encoder's pair encoder, the bi-encoder and the graph builders all read these facts
here, so the two stages cannot disagree about how a model is fed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from crossrank.errors import ModelError

__all__ = ["load_tokenizer", "model_max_length", "pad_id", "uses_token_types"]

# pad tokens of the common families, tried in order when the tokenizer names none
_PAD_TOKENS = ("[PAD]", "<pad>", "<|padding|>", "[pad]", "<|endoftext|>")


def load_tokenizer(tokenizer_file: str | Path) -> Tokenizer:
    """Return the tokenizer in ``tokenizer_file`` (Hugging Face tokenizers format).

    Raises:
        ModelError: the file is missing or not a tokenizer.
    """
    try:
        return Tokenizer.from_file(str(tokenizer_file))
    except Exception as err:  # tokenizers raises plain Exception on a bad file
        raise ModelError(f"cannot read tokenizer {tokenizer_file} ({err}); restore it from the model's source") from err


def pad_id(tok: Tokenizer) -> int:
    """Return the id a batch is padded with: the tokenizer's own, else a known pad token's, else 0."""
    padding = tok.padding
    if padding and "pad_id" in padding:
        return int(padding["pad_id"])
    for name in _PAD_TOKENS:
        tid = tok.token_to_id(name)
        if tid is not None:
            return int(tid)
    return 0


def model_max_length(config: Mapping[str, Any], default: int = 512) -> int:
    """Return the most tokens the model's position embeddings allow (``default`` when the config says none)."""
    positions = int(config.get("max_position_embeddings", default) or default)
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= 2  # positions start after the padding index
    return positions


def uses_token_types(config: Mapping[str, Any]) -> bool:
    """Return whether the model reads segment ids (BERT, ELECTRA: yes; RoBERTa, DistilBERT: no)."""
    return int(config.get("type_vocab_size", 0) or 0) >= 2
