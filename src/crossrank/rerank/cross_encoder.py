"""The cross-encoder: score pairs and rerank candidates with any Hugging Face cross-encoder."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from crossrank.documents import document_text
from crossrank.engine import check_backend_name, choose_backend
from crossrank.errors import ConfigError, InputError
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles, resolve
from crossrank.ranking import Hit, Ranking, ScoredPairs, rank_order
from crossrank.rerank.cache import ScoreCache
from crossrank.rerank.config import Activation, ScoringConfig
from crossrank.rerank.decoder import PromptScorer
from crossrank.rerank.scorer import Scorer, load_scorer
from crossrank.signals import CALIBRATED_THRESHOLD, query_signals

if TYPE_CHECKING:
    from crossrank.models.encoding import PairEncoder
    from crossrank.rerank.calibration import Calibration

__all__ = ["CrossEncoder", "Document", "document_text"]

log = logging.getLogger(__name__)

#: A document: a plain string, or a record ``{"id", "text", "title"?, "metadata"?}``.
Document: TypeAlias = str | Mapping[str, Any]


class CrossEncoder:
    """A cross-encoder that reads a query and a document together and scores their relevance.

    Args:
        model: a built-in name (``"default"``), a local Hugging Face or ONNX folder, an
            ``.onnx`` file, a Hugging Face hub id, or a :class:`~crossrank.rerank.scorer.Scorer`
            (any model family; :class:`~crossrank.rerank.testing.FakeScorer` for tests).
        backend: ``"openvino"`` (OpenVINO; built-ins run a static int8 graph), ``"onnx"`` (ONNX
            Runtime), ``"torch"`` (transformers, fp32), another registered backend
            (:func:`~crossrank.engine.register_backend`), or ``"auto"``: the fastest engine for this
            CPU and these files (see :func:`~crossrank.engine.choose_backend`);
            :attr:`backend_reason` says why.
        config: scoring settings; see :class:`ScoringConfig`.
        progress: show a progress bar on long inputs (off by default in library calls).
        calibration: maps the logit to a probability of relevance (``crossrank calibrate``).
            ``"auto"`` loads the model's saved calibration if there is one (see
            :func:`~crossrank.rerank.calibration.default_calibration_path`); a path loads that
            file; a :class:`~crossrank.rerank.calibration.Calibration` is used as is; ``None``
            turns calibration off. With one, scores default to ``activation="calibrated"``;
            rankings stay those of the uncalibrated model. One-logit models only.

    Attributes:
        scorer: the model family's :class:`~crossrank.rerank.scorer.Scorer` (raw scores, no cache).
        files: the model's files, or ``None`` for a scorer passed in.
        calibration: the calibration in use, or ``None``.
        backend_name: the backend in use (``"onnx"``, ``"openvino"`` or ``"torch"``).
        backend_reason: why that backend, in a few words (the CPU's instruction set for ``"auto"``).
        calibration_source: where the calibration in use came from (a file path), or ``None``.

    Example:
        >>> ce = CrossEncoder("default")
        >>> ranking = ce.rerank("what is a cat", ["A cat is a small feline.", "Paris is in France."])
        >>> ranking.hits[0].index
        0
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Scorer = "default",
        *,
        backend: str = "auto",
        config: ScoringConfig | None = None,
        progress: bool = False,
        calibration: str | os.PathLike[str] | Calibration | None = "auto",
        family: str | None = None,
        template: str | Mapping[str, Any] | None = None,
        instruction: str | None = None,
    ) -> None:
        check_backend_name(backend)
        self.progress = progress
        if isinstance(model, (str, os.PathLike)):
            files = resolve(model)
            if files.kind != "cross-encoder":
                raise ConfigError(
                    f"{files.name!r} is a {files.kind} (a dense retrieval model), not a cross-encoder; use it as "
                    "the dense retriever of an index (crossrank.retrieve), or pick a cross-encoder such as 'default'"
                )
            settings = dict(files.settings.get("scoring", {}))
            config = config or (ScoringConfig.from_dict(settings) if settings else ScoringConfig())
            self.backend_name, self.backend_reason = choose_backend(files, backend)
            log.info("%s runs on %s: %s", files.name, self.backend_name, self.backend_reason)
            self.files: ModelFiles | None = files
            if backend == "auto":
                self._upgrade_in_background()
            self.scorer: Scorer = load_scorer(
                files,
                backend=self.backend_name,
                config=config,
                progress=progress,
                reason=self.backend_reason,
                family=family,
                template=template,
                instruction=instruction,
            )
            if isinstance(self.scorer, PromptScorer):  # where and in which precision torch runs it
                self.backend_reason = self.scorer.backend_reason
                log.info("%s runs in %s", files.name, self.backend_reason)
            self._name = files.name
        elif isinstance(model, Scorer):
            config = config or ScoringConfig()
            self.files = None
            self.scorer = model
            self._name = str(getattr(model, "name", "") or type(model).__name__)
            self.backend_name = str(getattr(model, "backend_name", "") or "custom")
            self.backend_reason = str(getattr(model, "backend_reason", "") or "a scorer passed in")
        else:
            raise ConfigError(
                f"model must be a name, a path or a Scorer (got {type(model).__name__}); e.g. CrossEncoder('default')"
            )
        max_length = getattr(self.scorer, "max_length", None)
        self.config = replace(config, max_length=max_length) if max_length else config
        self.encoder: PairEncoder | None = getattr(self.scorer, "encoder", None)
        if self.config.long_documents == "window" and self.encoder is None:
            raise ConfigError(
                f"long_documents='window' needs a scorer with a tokenizer, and {self._name!r} has none; "
                "use long_documents='truncate'"
            )
        self.backend = getattr(self.scorer, "backend", None)
        self.labels: tuple[str, ...] = tuple(self.scorer.labels)
        self.num_labels = len(self.labels)
        self.calibration_source: str | None = None
        self.calibration: Calibration | None = self._load_calibration(calibration)
        plain: Activation = getattr(self.scorer, "default_activation", None) or (
            "sigmoid" if self.num_labels == 1 else "softmax"
        )
        self.activation: Activation = config.activation or ("calibrated" if self.calibration is not None else plain)
        if self.activation == "calibrated" and self.calibration is None:
            raise ConfigError(_NO_CALIBRATION.format(name=self._name))
        # rerank orders by the uncalibrated score: calibration is monotone but isotonic maps tie,
        # so ordering by calibrated values could reorder tied documents
        self._plain_activation: Activation = plain
        self._label_index = self._resolve_label(config.relevance_label)
        builtin = lookup(self.files.builtin) if self.files is not None and self.files.builtin else None
        self._english_only = builtin is not None and builtin.languages == ("en",)
        self._warned_language = False
        self.cache: ScoreCache | None = None
        if config.cache_size > 0 or config.cache_dir is not None:
            # the cache holds raw logits and activation/calibration is applied after, so the key
            # need not name the calibration
            graph = getattr(self.backend, "model_file", self.files.folder if self.files is not None else "")
            key = f"{self._name}|{self.backend_name}|{graph}|{self.config.max_length}"
            self.cache = ScoreCache(key, size=config.cache_size, folder=config.cache_dir)

    def __repr__(self) -> str:
        return (
            f"CrossEncoder({self._name!r}, backend={self.backend_name!r}, "
            f"max_length={self.config.max_length}, activation={self.activation!r})"
        )

    @property
    def name(self) -> str:
        """Return the name the model was loaded by (a scorer's ``name``, or its class name)."""
        return self._name

    # ---------------------------------------------------------------- scoring

    def score(
        self, pairs: Sequence[Sequence[str]], *, activation: Activation | None = None, instruction: str | None = None
    ) -> npt.NDArray[np.float32]:
        """Return the score of each (query, document) pair, float32, in input order.

        The shape is ``(n,)`` for one-logit models and ``(n, num_labels)`` for multi-label heads.
        ``activation`` overrides the model's (``"calibrated"``, ``"sigmoid"``, ``"softmax"``, ``"none"``).
        ``instruction`` replaces a decoder reranker's task instruction for this call (Qwen3-Reranker,
        mxbai-rerank-v2); a model whose template takes none refuses it.

        Raises:
            InputError: a pair is not two non-empty strings.
            ConfigError: ``activation`` is unknown, ``"calibrated"`` with no calibration loaded, or
                an ``instruction`` for a model that takes none.
        """
        return self.score_details(pairs, activation=activation, instruction=instruction).scores

    def score_details(
        self, pairs: Sequence[Sequence[str]], *, activation: Activation | None = None, instruction: str | None = None
    ) -> ScoredPairs:
        """Return scores with, for each pair, whether it was truncated and how many tokens it used.

        Raises:
            InputError: a pair is not two non-empty strings.
        """
        queries, docs = _split_pairs(pairs)
        return self._score_as(queries, docs, (activation or self.activation,), instruction)[0]

    def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        k: int | None = None,
        *,
        query_id: str | None = None,
        return_text: bool = False,
        instruction: str | None = None,
    ) -> Ranking:
        """Return ``documents`` ranked for ``query``, best first, ties in input order.

        With a calibration, hits carry calibrated probabilities but are ordered by the
        uncalibrated score, so the ranking is the same as without calibration.

        Args:
            query: the query text.
            documents: strings, or records ``{"id", "text", "title"?, "metadata"?}`` carried
                through untouched in :attr:`Hit.document`.
            k: how many hits to return; ``None`` returns all.
            query_id: an id to carry on the ranking.
            return_text: put the scored text on each hit.
            instruction: a decoder reranker's task instruction for this call (see :meth:`score`).

        Raises:
            InputError: the query or a document is empty or of the wrong type.
        """
        return self.rerank_many(
            [query], [documents], k=k, query_ids=[query_id], return_text=return_text, instruction=instruction
        )[0]

    def rerank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[Document]],
        *,
        k: int | None = None,
        query_ids: Sequence[str | None] | None = None,
        return_text: bool = False,
        instruction: str | None = None,
    ) -> list[Ranking]:
        """Return one ranking per query; all pairs of all queries are scored in shared batches.

        Raises:
            InputError: lengths differ, or a query or document is empty or of the wrong type.
        """
        if isinstance(queries, str):
            raise InputError("queries must be a list of strings (got one str); use rerank() for one query")
        if len(queries) != len(documents):
            raise InputError(f"got {len(queries)} queries but {len(documents)} document lists; pass one list per query")
        if query_ids is not None and len(query_ids) != len(queries):
            raise InputError(f"got {len(query_ids)} query_ids for {len(queries)} queries")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive int or None (got {k!r})")
        self.relevance_column  # noqa: B018 - a multi-label model without a relevance label fails before scoring
        flat_q: list[str] = []
        flat_d: list[str] = []
        parsed = []
        for qi, (query, docs) in enumerate(zip(queries, documents, strict=True)):
            where = f"queries[{qi}]" if len(queries) > 1 else "query"
            _check_text(query, where)
            recs = _parse_documents(docs, where)
            parsed.append(recs)
            flat_q.extend([query] * len(recs))
            flat_d.extend(r[1] for r in recs)
        shown = self.activation
        scored = self.score_pairs(
            flat_q, flat_d, activations=(shown, self.ranking_activation(shown)), instruction=instruction
        )
        result = scored[0]
        scores, keys = self.relevance(result.scores), self.relevance(scored[-1].scores)
        threshold = CALIBRATED_THRESHOLD if shown == "calibrated" else None
        rankings = []
        start = 0
        for qi, recs in enumerate(parsed):
            stop = start + len(recs)
            s = scores[start:stop]
            full = rank_order(keys[start:stop])
            order = full[:k]
            trunc = result.truncated[start:stop]
            signals = (
                query_signals(
                    s, query=queries[qi], texts=[r[1] for r in recs], truncated=trunc, order=full, threshold=threshold
                )
                if len(recs)
                else None  # nothing was reranked: no signals
            )
            hits = tuple(
                Hit(
                    doc_id=recs[i][0],
                    score=float(s[i]),
                    index=int(i),
                    text=recs[i][1] if return_text else None,
                    document=recs[i][2],
                    truncated=bool(trunc[i]),
                    rank=r,
                )
                for r, i in enumerate(order.tolist(), start=1)
            )
            qid = query_ids[qi] if query_ids is not None else None
            rankings.append(Ranking(hits=hits, query_id=qid, num_truncated=int(trunc.sum()), signals=signals))
            start = stop
        return rankings

    # ---------------------------------------------------------------- ranking, for servers and jobs

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        activations: Sequence[Activation] = (),
        instruction: str | None = None,
    ) -> list[ScoredPairs]:
        """Score pairs ``(queries[i], documents[i])`` once; return their scores under each activation.

        With no ``activations``, the model's own (:attr:`activation`). The texts are not checked
        here: callers pass what :meth:`score` or :meth:`rerank` would accept. This is the call a
        server or batch job makes to report one score and rank by another from one model call;
        see :meth:`ranking_activation` and :meth:`relevance`.

        Raises:
            ConfigError: an activation is unknown or needs a calibration that is not loaded.
            InputError: a query leaves no room for a document.
        """
        acts = tuple(dict.fromkeys(activations)) or (self.activation,)
        by_act = self._score_as(list(queries), list(documents), acts, instruction)
        return [by_act[acts.index(a)] for a in activations] if activations else by_act

    def ranking_activation(self, activation: Activation | None = None) -> Activation:
        """Return the activation whose scores order results that report ``activation`` (default: the model's).

        Calibrated scores are ordered by the model's own activation (an isotonic calibration maps
        different logits to one probability, so ordering by it could reorder documents); every
        other activation orders by itself. With :func:`~crossrank.ranking.rank_order`, this is the
        one ranking rule of :meth:`rerank`, the HTTP service and batch reranking.
        """
        act = activation or self.activation
        return self._plain_activation if act == "calibrated" else act

    @property
    def relevance_column(self) -> int | None:
        """Return the score column that ranks documents; ``None`` for one-logit models.

        Raises:
            ConfigError: a multi-label model has no ``relevance_label`` to rank by.
        """
        if self.num_labels == 1:
            return None
        if self._label_index is None:
            raise ConfigError(
                f"this model has {self.num_labels} labels {list(self.labels)}; to rerank, choose the one to "
                "order by: ScoringConfig(relevance_label=...)"
            )
        return self._label_index

    def relevance(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return the relevance column of ``scores`` (as :meth:`score_pairs` gives them), 1-D float32.

        Raises:
            ConfigError: a multi-label model has no ``relevance_label`` to rank by.
        """
        if scores.ndim == 1:
            return scores
        column = self.relevance_column
        return np.ascontiguousarray(scores[:, 0 if column is None else column])

    # ---------------------------------------------------------------- internals

    def _upgrade_in_background(self) -> None:
        """On a CPU with int8 dot products, start building the faster OpenVINO graph for the next load."""
        from crossrank.cpu import int8_dot_product
        from crossrank.models.source import has_openvino

        builtin = lookup(self.files.builtin) if self.files is not None and self.files.builtin else None
        if builtin is None or self.backend_name != "onnx" or not int8_dot_product() or not has_openvino():
            return
        pid = builtin.prepare_in_background()
        if pid is not None:
            log.warning(
                "this CPU runs %s faster on its static int8 OpenVINO graph: building it in the background "
                "(pid %d, once, about a minute at low priority); later loads use it. "
                "Set CROSSRANK_BACKGROUND_BUILD=0 to skip, or run `crossrank models prepare %s --openvino` ahead",
                builtin.name,
                pid,
                builtin.name,
            )

    def _load_calibration(self, calibration: str | os.PathLike[str] | Calibration | None) -> Calibration | None:
        if calibration is None:
            return None
        from crossrank.rerank.calibration import Calibration, default_calibration_path, model_fingerprint

        auto = isinstance(calibration, str) and calibration == "auto"
        if auto:
            if self.num_labels != 1 or self.files is None:
                return None  # calibrations are fitted for one-logit models only
            path = default_calibration_path(self.files)
            if not path.is_file():
                return None
            cal = Calibration.load(path)
            where = str(path)
        elif isinstance(calibration, Calibration):
            cal, where = calibration, "the given Calibration"
        elif isinstance(calibration, (str, os.PathLike)):
            cal, where = Calibration.load(calibration), os.fspath(calibration)
        else:
            raise ConfigError(
                "calibration must be 'auto', a path to a calibration file, a Calibration or None "
                f"(got {type(calibration).__name__})"
            )
        if self.num_labels != 1:
            raise ConfigError(
                f"calibration maps a one-logit relevance score to a probability, but {self._name!r} has "
                f"{self.num_labels} labels {list(self.labels)}; pass calibration=None"
            )
        if cal.fingerprint and self.files is not None and cal.fingerprint != model_fingerprint(self.files):
            if auto:
                log.warning(
                    "ignoring calibration %s: it was fitted for other weights (%s, fingerprint %s); "
                    "re-run `crossrank calibrate --model %s ...`",
                    where,
                    cal.model or "unknown model",
                    cal.fingerprint,
                    self._name,
                )
                return None
            log.warning("calibration %s was fitted for other weights (%s); using it anyway", where, cal.model)
        log.info("using the %s calibration in %s for %s", cal.method, where, self._name)
        self.calibration_source = where
        return cal

    def _check_activation(self, act: Activation) -> None:
        if act not in ("sigmoid", "softmax", "none", "calibrated"):
            raise ConfigError(f"activation must be 'sigmoid', 'softmax', 'none' or 'calibrated' (got {act!r})")
        if act == "calibrated" and self.calibration is None:
            raise ConfigError(_NO_CALIBRATION.format(name=self._name))

    def _activate(self, logits: npt.NDArray[np.float32], act: Activation) -> npt.NDArray[np.float32]:
        if act == "calibrated":
            assert self.calibration is not None  # _check_activation ran
            return self.calibration.apply(logits[:, 0])
        return _activate(logits, act)

    def _score(self, queries: list[str], docs: list[str], activation: Activation | None) -> ScoredPairs:
        return self._score_as(queries, docs, (activation or self.activation,))[0]

    def _score_as(
        self, queries: list[str], docs: list[str], acts: tuple[Activation, ...], instruction: str | None = None
    ) -> list[ScoredPairs]:
        """Score the pairs once and return their scores under each activation in ``acts``."""
        for act in acts:
            self._check_activation(act)
        if instruction is not None:
            self._check_instruction(instruction)
        if self._english_only and not self._warned_language:
            self._check_language(queries)
        if self.config.long_documents == "window":
            return self._score_windows(queries, docs, acts)
        logits, truncated, tokens = self._logits(queries, docs, instruction)
        if truncated.any():
            log.warning(
                "%d of %d pairs were truncated to max_length=%d tokens (the query is kept, the document cut); "
                "use long_documents='window' to score whole documents",
                int(truncated.sum()),
                len(queries),
                self.config.max_length,
            )
        return [ScoredPairs(self._activate(logits, act), truncated, tokens) for act in acts]

    def _check_language(self, queries: list[str]) -> None:
        """Warn once when queries are mostly in a non-Latin script and the model knows English only."""
        sample = "".join(dict.fromkeys(queries[:1000]))
        letters = [c for c in sample if c.isalpha()]
        if letters and sum(not c.isascii() for c in letters) > 0.5 * len(letters):
            self._warned_language = True
            log.warning(
                "the queries are mostly not in the Latin script, but %r was trained on English (MS MARCO) only, so "
                "its scores mean little for them; use a multilingual cross-encoder such as "
                "BAAI/bge-reranker-v2-m3 or cross-encoder/mmarco-mMiniLMv2-L12-H384-v1",
                self._name,
            )

    def _check_instruction(self, instruction: str) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError(f"instruction must be a non-empty str (got {instruction!r})")
        template = getattr(self.scorer, "template", None)
        if template is None or not template.instruction:
            what = f"its {template.name!r} template" if template is not None else "a cross-encoder of its family"
            raise ConfigError(
                f"{self._name!r} takes no instruction ({what} has no place for one); drop instruction= "
                "(instructions are for decoder rerankers such as Qwen3-Reranker and mxbai-rerank-v2)"
            )

    def _logits(
        self, queries: list[str], docs: list[str], instruction: str | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
        if self.cache is None or not queries:
            return self._compute_logits(queries, docs, instruction)
        # a pair's cached score holds for one instruction: the key reads it with the query
        keyed = queries if instruction is None else [f"{instruction}\x00{q}" for q in queries]
        keys = self.cache.keys(keyed, docs)
        logits, found = self.cache.get(keys, self.num_labels)
        truncated = np.zeros(len(queries), dtype=np.bool_)
        tokens = np.zeros(len(queries), dtype=np.int32)
        todo = np.flatnonzero(~found)
        if todo.size:
            new, trunc, tok = self._compute_logits([queries[i] for i in todo], [docs[i] for i in todo], instruction)
            logits[todo], truncated[todo], tokens[todo] = new, trunc, tok
            self.cache.put([keys[i] for i in todo], new)
        if found.any() and self.encoder is not None:  # a cached pair's truncation and tokens are recomputed cheaply
            hit = np.flatnonzero(found)
            enc = self.encoder.encode([queries[i] for i in hit], [docs[i] for i in hit])
            truncated[hit], tokens[hit] = enc.truncated, enc.lengths
        elif found.any() and hasattr(self.scorer, "tokens"):  # a prompt family's token builder
            hit = np.flatnonzero(found)
            built = self.scorer.tokens([queries[i] for i in hit], [docs[i] for i in hit], instruction=instruction)
            truncated[hit], tokens[hit] = built.truncated, built.lengths
        return logits, truncated, tokens

    def _compute_logits(
        self, queries: list[str], docs: list[str], instruction: str | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
        if instruction is None:
            scored = self.scorer.score(queries, docs)
        else:
            scored = self.scorer.score(queries, docs, instruction=instruction)  # type: ignore[call-arg]
        logits = np.asarray(scored.scores, dtype=np.float32).reshape(len(queries), self.num_labels)
        return logits, scored.truncated, scored.num_tokens

    def _score_windows(self, queries: list[str], docs: list[str], acts: tuple[Activation, ...]) -> list[ScoredPairs]:
        assert self.encoder is not None  # the constructor refuses windows without one
        qlens = self.encoder.check_queries(queries)
        win_q: list[str] = []
        win_d: list[str] = []
        group: list[int] = []
        for i, (q, d) in enumerate(zip(queries, docs, strict=True)):
            budget = self.encoder.doc_budget(int(qlens[i]))
            stride = self.config.window_stride or max(1, budget // 2)
            for w in self.encoder.windows(d, budget=budget, stride=min(stride, budget)):
                win_q.append(q)
                win_d.append(w)
                group.append(i)
        logits, truncated, tokens = self._logits(win_q, win_d)
        groups = np.asarray(group, dtype=np.intp)
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        any_truncated = np.logical_or.reduceat(truncated, starts)
        total_tokens = np.add.reduceat(tokens, starts).astype(np.int32)
        out = []
        for act in acts:
            scores = self._activate(logits, act)
            if self.config.window_aggregate == "max":
                agg = np.maximum.reduceat(scores, starts, axis=0)
            elif self.config.window_aggregate == "first":
                agg = scores[starts]
            else:
                counts = np.diff(np.r_[starts, groups.size]).reshape(-1, *([1] * (scores.ndim - 1)))
                agg = np.add.reduceat(scores, starts, axis=0) / counts
            out.append(ScoredPairs(agg.astype(np.float32, copy=False), any_truncated, total_tokens))
        return out

    def _resolve_label(self, label: str | int | None) -> int | None:
        if label is None:
            return 0 if self.num_labels == 1 else None
        if isinstance(label, int) and not isinstance(label, bool):
            if not 0 <= label < self.num_labels:
                raise ConfigError(f"relevance_label index must be in [0, {self.num_labels}) (got {label})")
            return label
        lowered = [lab.lower() for lab in self.labels]
        if str(label).lower() not in lowered:
            raise ConfigError(f"relevance_label {label!r} is not a label of this model; labels: {list(self.labels)}")
        return lowered.index(str(label).lower())


# -------------------------------------------------------------------- helpers

_NO_CALIBRATION = (
    "activation 'calibrated' needs a calibration, and model {name!r} has none loaded; fit one with "
    "`crossrank calibrate --model {name} --data DIR --run RUN`, or pass calibration=PATH, or use "
    "activation 'sigmoid'"
)


def _activate(logits: npt.NDArray[np.float32], act: Activation) -> npt.NDArray[np.float32]:
    x = logits.astype(np.float32, copy=False)
    if act == "sigmoid":
        out = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free sigmoid
    elif act == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    else:
        out = x
    out = out.astype(np.float32, copy=False)
    result: npt.NDArray[np.float32] = out[:, 0] if out.shape[1] == 1 else out
    return result


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a str (got {type(text).__name__} {_preview(text)})")
    if not text.strip():
        raise InputError(f"{where} is empty (got {text!r}); pass non-blank text or drop the item")


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_pairs(pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise InputError(
            f"pairs must be a list of (query, document) pairs (got {type(pairs).__name__}); "
            "e.g. [('what is a cat', 'A cat is a feline.')]"
        )
    queries: list[str] = []
    docs: list[str] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InputError(f"pairs[{i}] must be a (query, document) pair of two strings (got {_preview(pair)})")
        _check_text(pair[0], f"pairs[{i}][0] (the query)")
        _check_text(pair[1], f"pairs[{i}][1] (the document)")
        queries.append(pair[0])
        docs.append(pair[1])
    return queries, docs


def _parse_documents(documents: Sequence[Document], where: str) -> list[tuple[str, str, Mapping[str, Any] | None]]:
    """Return ``(doc_id, text to score, original record or None)`` for each document."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise InputError(
            f"documents for {where} must be a list of strings or records (got {type(documents).__name__}); "
            "wrap a single document in a list"
        )
    out: list[tuple[str, str, Mapping[str, Any] | None]] = []
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        label = f"documents[{i}]" if where == "query" else f"documents[{where}][{i}]"
        if isinstance(doc, str):
            _check_text(doc, label)
            doc_id, text, record = str(i), doc, None
        elif isinstance(doc, Mapping):
            raw_text = doc.get("text")
            if not isinstance(raw_text, str):
                raise InputError(f"{label} needs a 'text' str field (got {_preview(raw_text)} in {_preview(doc)})")
            title = doc.get("title") or ""
            if not isinstance(title, str):
                raise InputError(f"{label} 'title' must be a str (got {type(title).__name__})")
            text = document_text(title, raw_text)
            _check_text(text, label)
            raw_id = doc.get("id", doc.get("_id", i))
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                raise InputError(f"{label} 'id' must be a str or int (got {_preview(raw_id)})")
            doc_id, record = str(raw_id), doc
        else:
            raise InputError(
                f"{label} must be a str or a record with a 'text' field (got {type(doc).__name__} {_preview(doc)})"
            )
        if doc_id in seen:
            raise InputError(f"{label} repeats doc id {doc_id!r}; ids must be unique within one query's documents")
        seen.add(doc_id)
        out.append((doc_id, text, record))
    return out
