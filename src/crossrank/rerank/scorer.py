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
}

_DETECTORS: list[tuple[str, Callable[[ModelFiles], bool]]] = []

# architectures whose family crossrank knows but cannot score yet
_PLANNED = {
    "ForCausalLM": "a decoder (causal LM) reranker",
    "ForConditionalGeneration": "a sequence-to-sequence (T5) reranker",
}


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


def family_of(files: ModelFiles) -> str:
    """Return the family of a model from its settings, its detectors and its config's ``architectures``.

    Raises:
        ConfigError: the config names an architecture crossrank cannot score, saying which.
    """
    named = files.settings.get("family")
    if isinstance(named, str) and named:
        return named
    for name, detect in _DETECTORS:
        if detect(files):
            return name
    architectures = [str(a) for a in files.config.get("architectures") or []]
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
    for arch in architectures:
        for suffix, what in _PLANNED.items():
            if arch.endswith(suffix):
                raise ConfigError(
                    f"{files.name!r} is {what} ({arch}); crossrank scores sequence-classification "
                    "cross-encoders (e.g. cross-encoder/ms-marco-MiniLM-L-12-v2, BAAI/bge-reranker-base) today"
                )
    # an ONNX or OpenVINO graph with a logits output, or a config without architectures
    return "sequence-classification"


def load_scorer(
    files: ModelFiles, *, backend: str, config: ScoringConfig, progress: bool = False, reason: str = ""
) -> Scorer:
    """Return the scorer of ``files``' family, running on ``backend``.

    Raises:
        ConfigError: the family is unknown; the message lists the known ones.
    """
    family = family_of(files)
    target = FAMILIES.get(family)
    if target is None:
        raise ConfigError(
            f"{files.name!r} is of family {family!r}, which no scorer handles; known families: "
            f"{sorted(FAMILIES)} (add one with crossrank.rerank.scorer.register_family)"
        )
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    scorer: Scorer = cls.from_files(files, backend=backend, config=config, progress=progress, reason=reason)
    return scorer
