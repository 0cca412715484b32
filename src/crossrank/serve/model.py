"""What the server needs from a cross-encoder (and a pipeline), in one place.

The server merges pairs of several requests into one model call and needs, from that one call,
scores under each activation its requests asked for, plus truncation flags and token counts; and
it orders results exactly as :meth:`CrossEncoder.rerank` does. This adapter is the only part of
the server that reaches into the cross-encoder's internals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError
from crossrank.pipeline import Pipeline, SearchResult
from crossrank.ranking import ScoredPairs
from crossrank.rerank.config import Activation
from crossrank.rerank.cross_encoder import CrossEncoder
from crossrank.retrieve.index_files import IndexDamagedError, IndexError_
from crossrank.serve.errors import ApiError
from crossrank.serve.follow import FollowedPipeline

__all__ = ["ServedModel"]

log = logging.getLogger(__name__)

_PROBABILITIES = ("sigmoid", "softmax", "calibrated")

# Pairs timed at load for the model's speed: 8 web-search style queries, each with 8 passages of
# 60-80 words (about 100 tokens a pair, like MS MARCO passages), relevant and not.
_SPEED_QUERIES = (
    "what causes the northern lights",
    "how long should you boil an egg",
    "symptoms of iron deficiency in adults",
    "when was the printing press invented",
    "best way to store fresh basil",
    "how do vaccines train the immune system",
    "average rainfall in the amazon rainforest",
    "difference between a virus and bacteria",
)
_SPEED_PASSAGES = (
    "Auroras form when charged particles from the solar wind reach the upper atmosphere near the magnetic "
    "poles. Earth's magnetic field funnels electrons and protons along field lines, where they collide with "
    "oxygen and nitrogen atoms between roughly 100 and 300 kilometres up. The excited atoms release light as "
    "they relax: oxygen gives the common green glow and rarer red fringes, while nitrogen adds blue and purple "
    "edges during strong geomagnetic storms.",
    "For a soft-boiled egg with a runny yolk, lower the egg into water that is already boiling and cook it for "
    "about six minutes. Eight minutes gives a jammy centre, and ten to twelve minutes a fully firm yolk. Move "
    "the eggs to a bowl of cold water straight away to stop the cooking; very fresh eggs are harder to peel, so "
    "eggs a week or two old work best.",
    "Iron deficiency develops slowly, so early symptoms are easy to miss. Adults often notice tiredness, "
    "shortness of breath on exertion, pale skin, headaches and cold hands and feet. Some people develop brittle "
    "nails, a sore tongue or cravings for ice. Blood tests measuring haemoglobin and ferritin confirm the "
    "diagnosis, and treatment usually combines iron supplements with finding the cause, such as blood loss.",
    "Johannes Gutenberg developed a movable-type printing press in Mainz around 1440, combining metal type cast "
    "in a hand mould, an oil-based ink and a screw press adapted from wine making. His Bible, completed around "
    "1455, showed that books could be produced in hundreds of identical copies. Earlier movable type existed in "
    "China and Korea, but Gutenberg's system spread quickly across Europe.",
    "Fresh basil keeps best at room temperature. Trim the stems and stand the bunch in a glass of water like "
    "cut flowers, loosely covered with a plastic bag, away from direct sun. The refrigerator turns the leaves "
    "black within a day or two because basil is sensitive to cold. For longer storage, blend the leaves with "
    "olive oil and freeze the paste in an ice cube tray.",
    "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen, such as a protein "
    "from its surface. Antigen-presenting cells show this material to T cells, which help B cells produce "
    "antibodies that recognise it. Some of these cells become long-lived memory cells, so if the real pathogen "
    "arrives later the body responds faster and more strongly, often before illness sets in.",
    "The Amazon rainforest receives on average between 1,500 and 3,000 millimetres of rain per year, with some "
    "western areas near the Andes exceeding 4,000 millimetres. Much of this rain is recycled: trees release "
    "water vapour through their leaves, which forms new clouds further inland. Most regions have a wetter "
    "season and a drier season, and droughts have become more frequent in recent decades.",
    "Bacteria are single-celled living organisms with their own metabolism; most are harmless and many are "
    "useful, and bacterial infections can often be treated with antibiotics. Viruses are much smaller particles "
    "of genetic material in a protein coat that can only reproduce inside the cells of a host. Antibiotics have "
    "no effect on viruses, which are prevented with vaccines and treated, in some cases, with antiviral drugs.",
)
#: requests whose model calls make the speed measured on served traffic
_SERVED_WINDOW = 64
#: characters per token in English text under a WordPiece or BPE vocabulary, roughly
_CHARS_PER_TOKEN = 4.0
#: tokens a pair's template adds (CLS and two SEP for BERT-style models)
_TEMPLATE_TOKENS = 3.0


class ServedModel:
    """A loaded cross-encoder, and optionally a pipeline over an index, as the server uses them.

    Args:
        reranker: the cross-encoder; it is used from one thread at a time (the batcher's).
        pipeline: a pipeline whose reranker is ``reranker``, for ``/v1/search``; or ``None``. An
            index follows the writes to its folder (see :mod:`crossrank.serve.follow`); any other
            first stage is searched as it is.
    """

    def __init__(self, reranker: CrossEncoder, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None and pipeline.reranker is not reranker:
            raise ConfigError("the pipeline must rerank with the served cross-encoder (Pipeline(index, reranker=ce))")
        self.reranker = reranker
        self._followed = FollowedPipeline(pipeline) if pipeline is not None else None
        self.files = model_files(reranker)
        self.size_bytes = sum(f.stat().st_size for f in self.files)
        self.pairs_per_s: float | None = None  # measured by warm_up
        self.work_per_s: float | None = None  # the same, in the units of pair_costs
        self._served: deque[tuple[int, float]] = deque(maxlen=_SERVED_WINDOW)
        self._served_lock = threading.Lock()

    def warm_up(self) -> None:
        """Score one pair, so the engine's one-time setup is done; then time one batch of 64 pairs.

        The first inference must not start on several engine threads at once: OpenVINO's Python
        binding initialises its numpy bridge lazily, and two threads doing that together were seen
        to deadlock. One pair runs as one batch on one thread.

        The 64 pairs (8 queries x 8 passages of about 100 tokens a pair) go straight to the engine,
        past the score cache, so the speed is the model's own and no cache is filled with them.
        """
        self.reranker.score([("warm up", "warm up")])
        queries = [q for q in _SPEED_QUERIES for _ in _SPEED_PASSAGES]
        documents = list(_SPEED_PASSAGES) * len(_SPEED_QUERIES)
        started = time.perf_counter()
        self.reranker.scorer.score(queries, documents)
        seconds = time.perf_counter() - started
        self.pairs_per_s = len(queries) / seconds if seconds > 0 else None
        self.work_per_s = float(self.pair_costs(queries, documents).sum()) / seconds if seconds > 0 else None

    def record_speed(self, pairs: int, seconds: float) -> None:
        """Remember the model call of one served request: ``pairs`` scored in ``seconds``.

        A call merged from several requests is remembered once per request, with the same pairs and
        seconds, so the rate is unchanged.
        """
        if pairs > 0 and seconds > 0:
            with self._served_lock:
                self._served.append((pairs, seconds))

    @property
    def served_pairs_per_s(self) -> float | None:
        """Return the pairs per second of the model calls of the last 64 requests; ``None`` before any."""
        with self._served_lock:
            pairs = sum(p for p, _ in self._served)
            seconds = sum(s for _, s in self._served)
        return pairs / seconds if seconds > 0 else None

    @property
    def pipeline(self) -> Pipeline | None:
        """Return the search pipeline, on the generation of the index the last search used; ``None`` without one."""
        return self._followed.current if self._followed is not None else None

    @property
    def name(self) -> str:
        """Return the model's name."""
        return self.reranker.name

    @property
    def max_length(self) -> int:
        """Return the most tokens of one pair."""
        return int(self.reranker.config.max_length or 512)

    @property
    def activation(self) -> Activation:
        """Return the activation scores get by default (the library's default for this model)."""
        return self.reranker.activation

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the model's output labels."""
        return self.reranker.labels

    def describe(self) -> dict[str, Any]:
        """Return JSON-ready facts about the model (and the index it searches, if any)."""
        return {
            "max_length": self.max_length,
            "activation": self.activation,
            "scores": "probability" if self.is_probability(self.activation) else "logit",
            "labels": list(self.labels),
            "backend": self.reranker.backend_name,
            # the folder's name only: where the server's files lie is no client's business
            "index": self._index_name(),
            "size_mb": round(self.size_bytes / 1e6, 1),
            "pairs_per_s": _round(self.pairs_per_s),
            "pairs_per_s_served": _round(self.served_pairs_per_s),
        }

    def _index_name(self) -> str | None:
        """Return the served index's folder name, or the name of another first stage; ``None`` without search."""
        pipeline = self.pipeline
        if pipeline is None:
            return None
        return Path(pipeline.index.folder).name if pipeline.index is not None else pipeline.default_retriever

    def describe_index(self) -> dict[str, Any] | None:
        """Return JSON-ready facts about the served index: documents and first stages; ``None`` without one.

        A first stage other than an index reports its name, and its documents when it has a length.
        """
        pipeline = self.pipeline
        if pipeline is None:
            return None
        index = pipeline.index
        if index is None:
            stage = pipeline.first_stage
            return {
                "documents": len(stage) if isinstance(stage, Sized) else None,
                "retrievers": [pipeline.default_retriever],
                "default_retriever": pipeline.default_retriever,
            }
        return {
            "documents": len(index),
            "retrievers": list(index.retrievers),
            "default_retriever": index.default_retriever,
        }

    @staticmethod
    def is_probability(activation: Activation) -> bool:
        """Return whether scores under ``activation`` are probabilities (else raw logits)."""
        return activation in _PROBABILITIES

    def output_activation(self, raw_scores: bool) -> Activation:
        """Return the activation of a request's scores: the model's default, or ``"none"`` (logits)."""
        return "none" if raw_scores else self.activation

    def order_activation(self, activation: Activation) -> Activation:
        """Return the activation whose scores order results, as ``CrossEncoder.rerank`` does.

        Calibrated scores are ordered by the uncalibrated ones (isotonic maps tie); any other
        activation orders by itself, so ties keep input order exactly as in the library.
        """
        return self.reranker.ranking_activation(activation)

    def relevance_column(self) -> int | None:
        """Return the output column that ranks documents; ``None`` for one-logit models."""
        return self.reranker.relevance_column

    @property
    def takes_instruction(self) -> bool:
        """Return whether the served model's prompt has a place for a task instruction."""
        template = getattr(self.reranker.scorer, "template", None)
        return bool(template is not None and template.instruction)

    def check_query(self, query: str) -> None:
        """Raise :class:`~crossrank.errors.InputError` when ``query`` leaves no room for a document."""
        if self.reranker.encoder is not None:
            self.reranker.encoder.check_queries([query])

    def cut(self, document: str, max_tokens: int) -> tuple[str, bool]:
        """Return ``document`` cut to its first ``max_tokens`` tokens, and whether it was cut."""
        if len(document) <= max_tokens:  # every token covers at least one character
            return document, False
        if self.reranker.encoder is None:  # a scorer without a tokenizer: cut at 4 characters a token
            limit = int(max_tokens * _CHARS_PER_TOKEN)
            return document[:limit], len(document) > limit
        windows = self.reranker.encoder.windows(document, budget=max_tokens, stride=max_tokens)
        return windows[0], len(windows) > 1

    def pair_costs(
        self, queries: Sequence[str], documents: Sequence[str], max_doc_tokens: int | None = None
    ) -> npt.NDArray[np.float64]:
        """Return, per pair, an estimate of the tokens the model will read, from character counts alone.

        About 4 characters a token, the template's special tokens, the document cut to
        ``max_doc_tokens`` and the pair to ``max_length`` (with ``long_documents="window"`` a long
        document is read in several windows, so it is not cut). The estimate only has to rank
        requests by cost: the server measures its rate in the same units, so a constant error in
        characters per token cancels out. It never tokenizes, so it is cheap on the event loop.
        """
        q = np.array(list(map(len, queries)), dtype=np.float64)
        doc_tokens = np.array(list(map(len, documents)), dtype=np.float64) / _CHARS_PER_TOKEN
        if max_doc_tokens is not None:
            doc_tokens = np.minimum(doc_tokens, max_doc_tokens)
        tokens = q / _CHARS_PER_TOKEN + doc_tokens + _TEMPLATE_TOKENS
        if self.reranker.config.long_documents != "window":
            tokens = np.minimum(tokens, self.max_length)
        return tokens

    def score(
        self,
        queries: list[str],
        documents: list[str],
        activations: Sequence[Activation],
        *,
        instruction: str | None = None,
    ) -> list[ScoredPairs]:
        """Return the pairs' scores under each activation, from one model call.

        Raises:
            InputError: a query is too long or a text is empty.
            ConfigError: an activation is not available for this model.
        """
        return self.reranker.score_pairs(queries, documents, activations=tuple(activations), instruction=instruction)

    def search(self, queries: list[str], *, k: int, depth: int, retriever: Any, rerank: bool) -> list[SearchResult]:
        """Return one search result per query from the pipeline, all queries in shared batches.

        The search runs on the index's current generation: one a write committed since the last
        search is opened first (see :mod:`crossrank.serve.follow`).

        Raises:
            ApiError: ``unavailable`` when the index is damaged or cannot be reopened after a write.
        """
        assert self._followed is not None  # the route checks
        try:
            with self._followed.use() as pipeline:
                return pipeline.search_many(queries, k=k, depth=depth, retriever=retriever, rerank=rerank)
        except IndexDamagedError as err:
            log.error("%s", err)
            raise ApiError(
                "unavailable", f"the served index is damaged ({err.file}); the server's operator must rebuild it"
            ) from err
        except IndexError_ as err:
            log.error("%s", err)
            raise ApiError(
                "unavailable", "the served index changed and could not be reopened; retry, or see the server log"
            ) from err


def model_files(reranker: CrossEncoder) -> list[Path]:
    """Return the files the engine loaded for ``reranker``: its graph and weights, tokenizer and config.

    OpenVINO graphs count their ``.xml`` and ``.bin``; ONNX graphs their external data files
    (``model.onnx.data``, ``model.onnx_data``); torch models their safetensors or ``.bin`` weights.
    """
    files: list[Path] = []
    if reranker.files is None:  # a scorer passed in: its files are its own business
        return files
    graph = getattr(reranker.backend, "model_file", None)
    if isinstance(graph, Path):
        files.append(graph)
        if graph.suffix == ".xml":
            files.append(graph.with_suffix(".bin"))
        else:
            files.extend(sorted(p for p in graph.parent.glob(f"{graph.name}?*") if p.name.endswith("data")))
    else:
        folder = reranker.files.folder
        files.extend(sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]))
    files.append(reranker.files.tokenizer_file)
    files.append(reranker.files.folder / "config.json")
    unique = dict.fromkeys(f.resolve() for f in files)
    return [f for f in unique if f.is_file()]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
