"""The scorer seam: one protocol between :class:`~crossrank.CrossEncoder` and a model family.

A model family (a sequence classifier such as MiniLM cross-encoders, a decoder LLM reranker, a
T5 reranker) differs in how it builds its inputs (template, special tokens, padding side) and
in its head (one logit, the difference of two token logits, a softmax over label tokens). A
:class:`Scorer` owns both and returns raw scores; :class:`~crossrank.CrossEncoder` is the shell
over it that validates input, caches, applies the activation or calibration and ranks.

Families are found by name in :data:`FAMILIES` (``name -> "module:Class"``, imported lazily);
:func:`family_of` reads a model's family from its config and files, never from its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from crossrank.errors import ConfigError
from crossrank.ranking import ScoredPairs

if TYPE_CHECKING:
    from crossrank.models.source import ModelFiles
    from crossrank.rerank.config import ScoringConfig

__all__ = ["FAMILIES", "Scorer", "family_of", "load_scorer", "register_family"]


@runtime_checkable
class Scorer(Protocol):
    """Turns (query, document) pairs into raw relevance scores.

    Attributes:
        labels: the names of the score columns; one for a relevance model (``("LABEL_0",)``).

    A scorer may also offer, and :class:`~crossrank.CrossEncoder` uses when present:
    ``name`` (str), ``max_length`` (the most tokens of a pair), ``encoder`` (a
    :class:`~crossrank.rerank.encoding.PairEncoder`, for ``long_documents="window"``, query checks
    and truncation flags of cached pairs), ``backend_name``, ``backend_reason`` and
    ``default_activation`` (``"sigmoid"``, ``"softmax"`` or ``"none"``).
    """

    labels: tuple[str, ...]

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> ScoredPairs:
        """Return raw scores, float32 ``(n, len(labels))`` or ``(n,)``, higher = more relevant, input order.

        ``queries[i]`` and ``documents[i]`` form pair ``i``; both lists hold non-empty strings
        (the caller checked). ``truncated`` and ``num_tokens`` say what the model read of each pair.
        """
        ...


#: model families by name: ``"module:Class"`` with a ``from_files(files, *, backend, config, progress)`` classmethod
FAMILIES: dict[str, str] = {
    "sequence-classification": "crossrank.rerank.classifier:SequenceClassifier",
    "decoder-classification": "crossrank.rerank.decoder:DecoderScorer",
    "causal-lm": "crossrank.rerank.decoder:DecoderScorer",
    "t5": "crossrank.rerank.seq2seq:T5Scorer",
}

_DETECTORS: list[tuple[str, Callable[[ModelFiles], bool]]] = []

_T5_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration", "UMT5ForConditionalGeneration")


def register_family(name: str, target: str | type[Any], *, detect: Callable[[ModelFiles], bool] | None = None) -> None:
    """Add a model family: ``target`` is a class (or ``"module:Class"``) with a ``from_files`` classmethod.

    ``detect(files)`` says whether a model's files belong to the family; detectors registered
    later are asked first. A model's ``crossrank.json`` may also name its family outright
    (``{"family": name}``).

    Raises:
        ConfigError: ``name`` is empty or ``target`` is not a class or ``"module:Class"`` string.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a family name must be a non-empty str (got {name!r})")
    if isinstance(target, str):
        if ":" not in target:
            raise ConfigError(f"family target must be 'module:Class' (got {target!r})")
        FAMILIES[name] = target
    elif isinstance(target, type):
        FAMILIES[name] = f"{target.__module__}:{target.__qualname__}"
    else:
        raise ConfigError(f"family target must be a class or 'module:Class' (got {type(target).__name__})")
    if detect is not None:
        _DETECTORS.insert(0, (name, detect))


def family_of(files: ModelFiles, family: str | None = None) -> str:
    """Return the family of a model: from ``family``, its settings, its detectors, its hub id or its config.

    The config's ``architectures`` decide: ``…ForSequenceClassification`` is
    ``"sequence-classification"`` (an encoder) or ``"decoder-classification"`` (a decoder model
    type, read at the last token); ``…ForCausalLM`` is ``"causal-lm"``; T5 is ``"t5"``. A few
    rerankers whose files do not say what they are are known by exact hub id
    (:data:`~crossrank.rerank.templates.KNOWN_MODELS`); a name is never guessed from.

    Raises:
        ConfigError: ``family`` contradicts the config, or the config names an architecture no
            family scores (the message lists the families).
    """
    from crossrank.rerank.templates import KNOWN_MODELS

    architectures = [str(a) for a in files.config.get("architectures") or []]
    found = _family_from_config(files, architectures)
    if family is not None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown family {family!r}; known families: {sorted(FAMILIES)}")
        if found is not None and found != family:
            raise ConfigError(
                f"family={family!r} contradicts {files.name!r}'s config ({', '.join(architectures)} is "
                f"{found!r}); drop family= or pick the model it was meant for"
            )
        return family
    named = files.settings.get("family")
    if isinstance(named, str) and named:
        return named
    for name, detect in _DETECTORS:
        if detect(files):
            return name
    if files.name in KNOWN_MODELS:
        return KNOWN_MODELS[files.name][0]
    if found is not None:
        return found
    if architectures:
        raise ConfigError(
            f"{files.name!r} is a {', '.join(architectures)}, which no crossrank family scores; supported: "
            "encoder and decoder …ForSequenceClassification, decoder …ForCausalLM (with a prompt template), "
            f"T5ForConditionalGeneration; families: {sorted(FAMILIES)}"
        )
    # an ONNX or OpenVINO graph with a logits output, or a config without architectures
    return "sequence-classification"


def _family_from_config(files: ModelFiles, architectures: list[str]) -> str | None:
    from crossrank.models.source import DECODER_MODEL_TYPES

    model_type = str(files.config.get("model_type", ""))
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "decoder-classification" if model_type in DECODER_MODEL_TYPES else "sequence-classification"
        if arch.endswith("ForCausalLM"):
            return "causal-lm"
        if arch in _T5_ARCHITECTURES:
            return "t5"
    return None


def load_scorer(
    files: ModelFiles,
    *,
    backend: str,
    config: ScoringConfig,
    progress: bool = False,
    reason: str = "",
    family: str | None = None,
    **options: Any,
) -> Scorer:
    """Return the scorer of ``files``' family, running on ``backend``.

    ``options`` go to the family's ``from_files`` (the decoder and T5 families take ``template``
    and ``instruction``).

    Raises:
        ConfigError: the family is unknown (the message lists the known ones), or an option is
            given to a family that takes none.
    """
    family = family_of(files, family)
    target = FAMILIES.get(family)
    if target is None:
        raise ConfigError(
            f"{files.name!r} is of family {family!r}, which no scorer handles; known families: "
            f"{sorted(FAMILIES)} (add one with crossrank.rerank.scorer.register_family)"
        )
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    given = {k: v for k, v in options.items() if v is not None}
    if family in ("causal-lm", "decoder-classification"):
        given["family"] = family
    elif given and family == "sequence-classification":
        raise ConfigError(
            f"{files.name!r} is a sequence-classification cross-encoder, which takes no {' or '.join(sorted(given))}; "
            "prompt templates and instructions are for decoder and T5 rerankers"
        )
    scorer: Scorer = cls.from_files(files, backend=backend, config=config, progress=progress, reason=reason, **given)
    return scorer
