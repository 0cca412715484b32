"""Pair encoding: the one function that turns (query, document) pairs into model inputs.

Inference and training both call :meth:`PairEncoder.encode`, so what a model is trained on and
what it is served can never drift apart. Truncation keeps the query whole and cuts the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from crossrank._text import plural
from crossrank.errors import InputError
from crossrank.models.tokenizer import load_tokenizer, pad_id

__all__ = ["EncodedPairs", "PairEncoder"]

# A document longer than this many characters per allowed token is cut before tokenizing, so a
# 1 MB document costs no more than a long one. Word pieces average ~4-5 characters; 24 leaves room.
_PRECUT_CHARS_PER_TOKEN = 24


@dataclass(frozen=True, slots=True)
class EncodedPairs:
    """Token ids of a list of pairs, padded to the longest pair.

    Attributes:
        input_ids: int64 ``(n, L)``.
        attention_mask: int64 ``(n, L)``; 1 on real tokens.
        token_type_ids: int64 ``(n, L)``; 0 for the query segment, 1 for the document.
        lengths: int32 ``(n,)``: real tokens per pair.
        truncated: bool ``(n,)``: the document was cut to fit ``max_length``.
    """

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int32]
    truncated: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def tensors(self) -> dict[str, npt.NDArray[np.int64]]:
        """Return the named model inputs, each int64 ``(n, L)``, as a backend takes them."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


class PairEncoder:
    """Tokenize (query, document) pairs for a cross-encoder.

    Args:
        tokenizer_file: a ``tokenizer.json`` (Hugging Face tokenizers format).
        max_length: the most tokens a pair may have, special tokens included.

    Example:
        >>> enc = PairEncoder(path_to_tokenizer_json, max_length=512)  # doctest: +SKIP
        >>> batch = enc.encode(["what is a cat"], ["A cat is a small animal."])  # doctest: +SKIP
    """

    def __init__(self, tokenizer_file: str | Path, *, max_length: int) -> None:
        if max_length < 8:
            raise InputError(f"max_length must be >= 8 (got {max_length})")
        tok = load_tokenizer(tokenizer_file)
        self.max_length = max_length
        self.pad_id = pad_id(tok)
        self.num_special = tok.post_processor.num_special_tokens_to_add(True) if tok.post_processor else 0
        tok.no_truncation()
        tok.no_padding()
        self._plain = Tokenizer.from_str(tok.to_str())  # no truncation, no padding: for lengths
        tok.enable_truncation(max_length, strategy="only_second")
        tok.enable_padding(pad_id=self.pad_id, pad_token=tok.id_to_token(self.pad_id) or "[PAD]")
        self._tok = tok

    def query_lengths(self, queries: Sequence[str]) -> npt.NDArray[np.int32]:
        """Return the token count of each query without special tokens."""
        encs = self._plain.encode_batch(list(queries), add_special_tokens=False)
        return np.fromiter((len(e.ids) for e in encs), dtype=np.int32, count=len(encs))

    def doc_budget(self, query_length: int) -> int:
        """Return how many document tokens fit beside a query of ``query_length`` tokens."""
        return self.max_length - self.num_special - query_length

    def check_queries(self, queries: Sequence[str]) -> npt.NDArray[np.int32]:
        """Return the token counts of ``queries``, raising if one leaves no room for a document.

        Raises:
            InputError: a query is too long for ``max_length``.
        """
        unique = list(dict.fromkeys(queries))
        lengths = self.query_lengths(unique)
        too_long = np.flatnonzero(lengths + self.num_special + 1 > self.max_length)
        if too_long.size:
            i = int(too_long[0])
            raise InputError(
                f"query {unique[i][:60]!r}... has {int(lengths[i])} tokens, leaving no room for the document "
                f"within max_length={self.max_length}; shorten the query or raise max_length"
            )
        by_query = dict(zip(unique, lengths.tolist(), strict=True))
        return np.array([by_query[q] for q in queries], dtype=np.int32)

    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> EncodedPairs:
        """Return the padded model inputs for the pairs ``zip(queries, documents)``.

        Raises:
            InputError: a query is too long to leave room for its document.
        """
        n = len(queries)
        if n != len(documents):
            raise InputError(
                f"got {plural(n, 'query')} but {plural(len(documents), 'document')}; pass one query per document"
            )
        if n == 0:
            empty = np.zeros((0, 0), dtype=np.int64)
            return EncodedPairs(empty, empty, empty, np.zeros(0, np.int32), np.zeros(0, np.bool_))
        self.check_queries(queries)
        cut_at = self.max_length * _PRECUT_CHARS_PER_TOKEN
        precut = np.fromiter((len(d) > cut_at for d in documents), dtype=np.bool_, count=n)
        docs = [d[:cut_at] for d in documents] if precut.any() else list(documents)
        encs = self._tok.encode_batch(list(zip(queries, docs, strict=True)))
        truncated = np.fromiter((len(e.overflowing) > 0 for e in encs), dtype=np.bool_, count=n)
        # A cut document whose cut part already fits was made of very long tokens: encode it whole.
        redo = np.flatnonzero(precut & ~truncated)
        if redo.size:
            whole = self._tok.encode_batch([(queries[i], documents[i]) for i in redo.tolist()])
            for i, e in zip(redo.tolist(), whole, strict=True):
                encs[i] = e
                truncated[i] = len(e.overflowing) > 0
        return _to_arrays(encs, truncated, self.pad_id)

    def windows(self, document: str, *, budget: int, stride: int) -> list[str]:
        """Return overlapping windows of ``document``, each at most ``budget`` tokens, ``stride`` apart.

        The windows are cut on token boundaries and returned as text spans of the original document.
        """
        enc = self._plain.encode(document, add_special_tokens=False)
        offsets = enc.offsets
        if len(offsets) <= budget:
            return [document]
        out = []
        start = 0
        while True:
            end = min(start + budget, len(offsets))
            out.append(document[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets):
                return out
            start += stride


def _to_arrays(encs: Sequence[Encoding], truncated: npt.NDArray[np.bool_], pad_id: int) -> EncodedPairs:
    width = max(len(e.ids) for e in encs)
    if any(len(e.ids) != width for e in encs):  # re-encoded items may differ in padded width
        ids_l = [e.ids + [pad_id] * (width - len(e.ids)) for e in encs]
        mask_l = [e.attention_mask + [0] * (width - len(e.ids)) for e in encs]
        type_l = [e.type_ids + [0] * (width - len(e.ids)) for e in encs]
    else:
        ids_l = [e.ids for e in encs]
        mask_l = [e.attention_mask for e in encs]
        type_l = [e.type_ids for e in encs]
    ids = np.array(ids_l, dtype=np.int64)
    mask = np.array(mask_l, dtype=np.int64)
    types = np.array(type_l, dtype=np.int64)
    lengths = mask.sum(axis=1, dtype=np.int32)
    return EncodedPairs(ids, mask, types, lengths, truncated)
