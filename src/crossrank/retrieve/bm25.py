"""BM25 through bm25s: analysis (lower-casing, stopwords, stemming), index building and search.

Analysis and search are bm25s's own (``bm25s.tokenization.Tokenizer``, ``bm25s.BM25``). The
index matrix is built here from token ids kept on disk, chunk by chunk with numpy, using bm25s's
term-frequency and idf formulas: bm25s's own builder walks every document in a Python loop over
lists of lists, which does not stream and is slow past a few hundred thousand documents. A test
checks that both builders give the same matrix.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.errors import ConfigError

__all__ = ["BM25Index", "BM25Settings", "BM25Tokenizer", "build_bm25"]

log = logging.getLogger(__name__)

_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


@dataclass(frozen=True, slots=True)
class BM25Settings:
    """BM25 parameters and text analysis.

    The defaults are Anserini's (Lucene BM25, ``k1=0.9``, ``b=0.4``, Porter stemming, Lucene's 33
    English stopwords, every run of letters or digits a word), which reproduce the reference BM25
    scores of the shared test collections. ``stopwords="en_plus"`` (NLTK's 179 words) often does
    better on small classic collections.

    Attributes:
        k1: term-frequency saturation.
        b: document-length normalisation (0 = none, 1 = full).
        method: the BM25 variant (``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"``, ``"bm25+"``).
        idf: the idf formula, when it should differ from ``method``'s (same choices).
        stemmer: a Snowball algorithm name from PyStemmer (``"porter"``, ``"english"``, ``"german"``,
            ...), or ``None`` for no stemming.
        stopwords: a language code bm25s knows (``"en"``, ``"de"``, ...), a list of words, or ``None``.
        lower: lower-case text before splitting.
        splitter: the regular expression whose matches are the words (single letters and digits
            count, as in Lucene's standard tokenizer).
        delta: the extra parameter of BM25L and BM25+.
    """

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    idf: str | None = None
    stemmer: str | None = "porter"
    stopwords: str | tuple[str, ...] | None = "en"
    lower: bool = True
    splitter: str = r"(?u)\b\w+\b"
    delta: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"BM25 method must be one of {', '.join(_METHODS)} (got {self.method!r})")
        if self.idf is not None and self.idf not in _METHODS:
            raise ConfigError(f"BM25 idf must be one of {', '.join(_METHODS)} or None (got {self.idf!r})")
        if not (self.k1 >= 0 and 0 <= self.b <= 1):
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")
        if isinstance(self.stopwords, list):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values."""
        d = asdict(self)
        if isinstance(self.stopwords, tuple):
            d["stopwords"] = list(self.stopwords)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BM25Settings:
        """Return settings from :meth:`to_dict` output; unknown keys are refused."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown BM25 settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


class BM25Tokenizer:
    """Turn texts into BM25 term ids, with a vocabulary that only grows (ids stay stable).

    Args:
        settings: the analysis settings.
        vocab_file: a vocabulary saved by :meth:`save`, to keep adding to.
    """

    def __init__(self, settings: BM25Settings, vocab_file: Path | None = None) -> None:
        bm25s = require("bm25s", feature="BM25 retrieval")
        from bm25s.tokenization import Tokenizer

        stemmer = None
        if settings.stemmer:
            stemmer_mod = require("Stemmer", feature="BM25 stemming")
            try:
                stemmer = stemmer_mod.Stemmer(settings.stemmer)
            except KeyError as err:
                raise ConfigError(
                    f"unknown stemmer {settings.stemmer!r}; choose one of {', '.join(stemmer_mod.algorithms())} or None"
                ) from err
        stopwords: Any = list(settings.stopwords) if isinstance(settings.stopwords, tuple) else settings.stopwords
        try:
            self._tok = Tokenizer(
                lower=settings.lower, splitter=settings.splitter, stopwords=stopwords, stemmer=stemmer
            )
        except (ValueError, re.error) as err:
            raise ConfigError(
                f"BM25 analysis settings (splitter {settings.splitter!r}, stopwords {settings.stopwords!r}): {err}"
            ) from err
        self._bm25s = bm25s
        if vocab_file is not None:
            data = json.loads(vocab_file.read_text(encoding="utf-8"))
            self._tok.word_to_stem = data["word_to_stem"]
            self._tok.stem_to_sid = data["stem_to_sid"]
            self._tok.word_to_id = data["word_to_id"]

    @property
    def vocab_size(self) -> int:
        """Return how many distinct terms the vocabulary holds."""
        tok = self._tok
        return len(tok.stem_to_sid) if tok.stemmer is not None else len(tok.word_to_id)

    def save(self, path: Path) -> None:
        """Write the vocabulary to ``path`` (JSON)."""
        tok = self._tok
        data = {"word_to_stem": tok.word_to_stem, "stem_to_sid": tok.stem_to_sid, "word_to_id": tok.word_to_id}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    def documents(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Return the term ids of ``texts`` (flat int32) and each text's count, growing the vocabulary."""
        ids = list(self._tok.streaming_tokenize(list(texts), update_vocab=True))
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
        flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum()))
        return flat, lengths

    def queries(self, texts: Sequence[str]) -> list[list[int]]:
        """Return the term ids of each query; terms the index never saw are dropped."""
        size = self.vocab_size
        out = []
        for ids in self._tok.streaming_tokenize(list(texts), update_vocab=False, allow_empty=False):
            out.append([i for i in ids if i < size])
        return out


def build_bm25(
    chunks: Iterable[tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]],
    *,
    num_terms: int,
    settings: BM25Settings,
    folder: Path,
) -> int:
    """Build a bm25s index from term-id chunks and save it (bm25s's format) into ``folder``.

    Args:
        chunks: a re-iterable of ``(flat term ids, lengths)`` per run of documents, in row order;
            it is read twice (document frequencies first, then scores).
        num_terms: the vocabulary size.
        settings: BM25 parameters.
        folder: where to save; bm25s loads it back memory-mapped.

    Returns:
        The number of documents indexed.
    """
    bm25s = require("bm25s", feature="BM25 retrieval")
    from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

    df = np.zeros(num_terms, dtype=np.int64)
    n_docs = 0
    total_len = 0
    for flat, lengths in chunks:
        doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        pairs = np.unique(doc * num_terms + flat)  # each (document, term) once
        df += np.bincount(pairs % num_terms, minlength=num_terms)
        n_docs += int(lengths.size)
        total_len += int(lengths.sum())
    avg_len = total_len / max(n_docs, 1)
    idf_fn = _select_idf_scorer(settings.idf or settings.method)
    idf = np.array([idf_fn(int(d), n_docs) if d else 0.0 for d in df.tolist()], dtype=np.float32)
    tfc_fn = _select_tfc_scorer(settings.method)
    non_occ = None
    if settings.method in ("bm25l", "bm25+"):  # these add a score for terms a document lacks
        zero_tfc = tfc_fn(np.zeros(1, np.float32), avg_len, avg_len, settings.k1, settings.b, settings.delta)
        non_occ = (idf * np.float32(zero_tfc[0])).astype(np.float32)

    # The matrix is assembled in place on disk: pass 1 gave each term's document count, so its
    # column's slice of the CSC arrays is known, and each chunk's entries are scattered straight
    # into their final positions. Memory stays at one chunk; the arrays are memory-mapped files.
    indptr = np.zeros(num_terms + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])
    folder.mkdir(parents=True, exist_ok=True)
    tmp_data, tmp_rows = folder / ".data.tmp", folder / ".indices.tmp"
    data = np.memmap(tmp_data, dtype=np.float32, mode="w+", shape=(max(nnz, 1),))
    rows = np.memmap(tmp_rows, dtype=np.int32, mode="w+", shape=(max(nnz, 1),))
    cursor = indptr[:-1].copy()  # next free position in each term's column
    row0 = 0
    for flat, lengths in chunks:
        doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        keys, tf = np.unique(doc * num_terms + flat, return_counts=True)
        d = keys // num_terms
        t = keys % num_terms
        dl = lengths[d].astype(np.float32)
        tfc = tfc_fn(tf.astype(np.float32), dl, np.float32(avg_len), settings.k1, settings.b, settings.delta)
        score = (idf[t] * tfc).astype(np.float32)
        if non_occ is not None:
            score -= non_occ[t]
        by_term = np.argsort(t, kind="stable")  # documents stay ascending inside each term
        ts = t[by_term]
        first = np.searchsorted(ts, ts, side="left")  # index of the first entry of each entry's term
        pos = cursor[ts] + (np.arange(ts.size) - first)
        data[pos] = score[by_term]
        rows[pos] = (d[by_term] + row0).astype(np.int32)
        cursor += np.bincount(t, minlength=num_terms)
        row0 += int(lengths.size)
    data.flush()
    rows.flush()
    model = bm25s.BM25(
        k1=settings.k1, b=settings.b, delta=settings.delta, method=settings.method, idf_method=settings.idf
    )
    model.scores = {"data": data[:nnz], "indices": rows[:nnz], "indptr": indptr, "num_docs": n_docs}
    model.vocab_dict = {}
    model.nonoccurrence_array = non_occ
    try:
        model.save(str(folder))  # bm25s's own format, written from the memory maps
    finally:
        del model, data, rows
        tmp_data.unlink(missing_ok=True)
        tmp_rows.unlink(missing_ok=True)
    return n_docs


class BM25Index:
    """A saved BM25 index, memory-mapped, searched with bm25s.

    Args:
        folder: a folder written by :func:`build_bm25`.
        tokenizer: the tokenizer whose vocabulary the index was built with.
        threads: threads for batches of queries.
    """

    def __init__(self, folder: Path, tokenizer: BM25Tokenizer, *, threads: int = 1) -> None:
        bm25s = require("bm25s", feature="BM25 retrieval")
        self.model = bm25s.BM25.load(str(folder), mmap=True, load_vocab=False)
        self.tokenizer = tokenizer
        self.num_docs = int(self.model.scores["num_docs"])
        self.threads = threads

    def search(self, queries: Sequence[str], k: int) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Yield, per query, the rows and scores of its top ``k`` documents, best first.

        Documents that share no term with the query are left out, so a list may be shorter than ``k``.
        """
        term_ids = self.tokenizer.queries(queries)
        k = min(k, self.num_docs)
        if k <= 0:
            for _ in queries:
                yield np.zeros(0, np.int64), np.zeros(0, np.float32)
            return
        for ids in term_ids:
            if not ids:
                yield np.zeros(0, np.int64), np.zeros(0, np.float32)
                continue
            scores = self.model.get_scores_from_ids(ids)
            top = _top_k(scores, k)
            keep = scores[top] > 0
            yield top[keep].astype(np.int64), scores[top][keep].astype(np.float32)


def _top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """Return the indices of the ``k`` highest scores, best first, ties by lower index."""
    if k >= scores.size:
        cand = np.arange(scores.size)
    else:
        cand = np.argpartition(-scores, k - 1)[:k]
        # include every index tied with the k-th score so the tie-break is by index, not by partition luck
        kth = scores[cand].min()
        cand = np.flatnonzero(scores >= kth)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k].astype(np.int64)
