"""Turn (query, document) pairs into a prompt template's token ids, with the tokenizers library.

Shared by the decoder and T5 families (:mod:`crossrank.rerank.decoder`,
:mod:`crossrank.rerank.seq2seq`): it builds each pair's tokens exactly as the template's
reference code does, cuts only the document when a pair is too long, and finds the token ids
the score is read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from crossrank.errors import ConfigError, InputError, ModelError
from crossrank.rerank.templates import Template

__all__ = ["PromptEncoder", "PromptTokens"]


@dataclass(frozen=True, slots=True)
class PromptTokens:
    """The token ids of a list of pairs, unpadded.

    Attributes:
        ids: one list of token ids per pair, in input order.
        truncated: bool ``(n,)``: the pair's document was cut to fit ``max_length``.
        lengths: int32 ``(n,)``: tokens per pair.
    """

    ids: list[list[int]]
    truncated: npt.NDArray[np.bool_]
    lengths: npt.NDArray[np.int32]


class PromptEncoder:
    """Build a template's token ids for pairs, at most ``max_length`` tokens each.

    Args:
        tokenizer_file: the model's ``tokenizer.json``.
        template: the prompt template.
        max_length: most tokens of one pair, template included.
        name: the model's name, for messages.

    Raises:
        ModelError: the tokenizer file cannot be read.
        ConfigError: the vocabulary lacks a token the template needs (its score tokens, or the
            beginning/end-of-sequence token it starts or ends with).
    """

    def __init__(self, tokenizer_file: str | Path, template: Template, *, max_length: int, name: str = "") -> None:
        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as err:  # the tokenizers library raises a bare Exception on a bad file
            raise ModelError(f"cannot read tokenizer {tokenizer_file} ({err})") from err
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self.template = template
        self.max_length = int(max_length)
        self.name = name or str(tokenizer_file)
        self.positive_id = self.token_id(template.positive)
        self.negative_id = self.token_id(template.negative) if template.negative is not None else None
        self.bos_id = self._special("bos") if template.bos else None
        self.eos_id = self._special("eos") if template.eos else None
        self._prefix = self._pieces(template.prefix)
        self._between = self._pieces(template.between)
        self._suffix = [] if template.joint else self._pieces(template.suffix)
        self._fixed = len(self._prefix) + len(self._between) + len(self._suffix)
        self._fixed += (self.bos_id is not None) + (self.eos_id is not None)

    # ------------------------------------------------------------------ vocabulary

    def token_id(self, word: str) -> int:
        """Return the id of the one token ``word`` is (as the references read it: encoded, else looked up).

        Raises:
            ConfigError: the vocabulary has no single token for ``word``.
        """
        ids = self.tokenizer.encode(word, add_special_tokens=False).ids
        if len(ids) == 1:
            return int(ids[0])
        found = self.tokenizer.token_to_id(word)
        if found is not None:
            return int(found)
        raise ConfigError(
            f"{self.name}'s vocabulary has no single token {word!r}, which the {self.template.name!r} template "
            f"reads its score from (it encodes to {len(ids)} tokens); pick the template that matches the "
            "model (template=...) or fix the tokenizer"
        )

    def _special(self, which: str) -> int:
        names = {"bos": ("<bos>", "<s>", "<|begin_of_text|>"), "eos": ("</s>", "<eos>", "<|endoftext|>")}[which]
        for name in names:
            found = self.tokenizer.token_to_id(name)
            if found is not None:
                return int(found)
        raise ConfigError(
            f"the {self.template.name!r} template starts or ends with a {which} token, and {self.name}'s "
            f"vocabulary has none of {list(names)}"
        )

    def _pieces(self, pieces: Sequence[str]) -> list[int]:
        out: list[int] = []
        for piece in pieces:
            out.extend(self.tokenizer.encode(piece, add_special_tokens=False).ids)
        return out

    # ------------------------------------------------------------------ pairs

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], *, instruction: str | None = None
    ) -> PromptTokens:
        """Return the token ids of each pair, cutting documents (only) to fit ``max_length``.

        Raises:
            InputError: a query and the template alone leave no room for a document token.
        """
        t = self.template
        qtexts = [t.query_text(q, instruction) for q in queries]
        dtexts = [t.document_text(d) for d in documents]
        if t.joint:
            return self._encode_joint(qtexts, dtexts)
        return self._encode_apart(qtexts, dtexts)

    def _room(self, used: int, where: int) -> int:
        room = self.max_length - used
        if room < 1:
            raise InputError(
                f"query {where} and the {self.template.name!r} template take {used} of {self.max_length} tokens, "
                "leaving none for the document; shorten the query or raise max_length"
            )
        return room

    def _wrap(self, body: list[int]) -> list[int]:
        head = [self.bos_id] if self.bos_id is not None else []
        tail = [self.eos_id] if self.eos_id is not None else []
        return head + self._prefix + body + self._suffix + tail

    def _encode_apart(self, qtexts: list[str], dtexts: list[str]) -> PromptTokens:
        qenc = self.tokenizer.encode_batch(qtexts, add_special_tokens=False)
        denc = self.tokenizer.encode_batch(dtexts, add_special_tokens=False)
        ids: list[list[int]] = []
        truncated = np.zeros(len(qtexts), dtype=np.bool_)
        for i, (q, d) in enumerate(zip(qenc, denc, strict=True)):
            room = self._room(self._fixed + len(q.ids), i)
            truncated[i] = len(d.ids) > room
            ids.append(self._wrap(q.ids + self._between + d.ids[:room]))
        return PromptTokens(ids, truncated, np.fromiter(map(len, ids), np.int32, count=len(ids)))

    def _encode_joint(self, qtexts: list[str], dtexts: list[str]) -> PromptTokens:
        t = self.template
        between = "".join(t.between)
        suffix = "".join(t.suffix)
        texts = [q + between + d + suffix for q, d in zip(qtexts, dtexts, strict=True)]
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ids: list[list[int]] = []
        truncated = np.zeros(len(texts), dtype=np.bool_)
        for i, enc in enumerate(encs):
            doc_start = len(qtexts[i]) + len(between)
            doc_end = doc_start + len(dtexts[i])
            starts = np.fromiter((s for s, _ in enc.offsets), np.int64, count=len(enc.ids))
            # tokens from the document's first character on are the document's, until the suffix
            first_doc = int(np.searchsorted(starts, doc_start, side="left"))
            first_suffix = int(np.searchsorted(starts, doc_end, side="left"))
            tail = len(enc.ids) - first_suffix
            room = self._room(self._fixed + first_doc + tail, i)
            body = enc.ids
            if first_suffix - first_doc > room:
                truncated[i] = True
                body = body[: first_doc + room] + body[first_suffix:]
            ids.append(self._wrap(body))
        return PromptTokens(ids, truncated, np.fromiter(map(len, ids), np.int32, count=len(ids)))
