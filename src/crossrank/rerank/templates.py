"""Prompt templates of the decoder (LLM) and T5 rerankers, as data, in one place.

A template says how one (query, document) pair becomes the model's tokens, piece by piece, as
each model's reference code builds them: the pieces are tokenized apart (with no special tokens)
and their tokens joined, so the token sequence is the reference's token for token. It also names
the tokens whose logits make the score.

The score is ``logit(positive) - logit(negative)`` at the last position (a log-odds, so its
sigmoid is the reference's 2-way softmax), or ``logit(positive)`` alone when ``negative`` is
``None`` (bge-reranker-v2-gemma's ``"Yes"`` logit).

Truncation cuts the document, never the template, the instruction or the query: a pair whose
template and query leave no room for a document token is an :class:`~crossrank.errors.InputError`.

A model may override any field in its ``crossrank.json`` (``{"template": {...}}``), or name a
template of :data:`TEMPLATES` (``{"template": "qwen3-reranker"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from crossrank.errors import ConfigError

__all__ = ["KNOWN_MODELS", "TEMPLATES", "Template", "template_for"]


@dataclass(frozen=True, slots=True)
class Template:
    """How a decoder or T5 reranker reads one pair.

    Attributes:
        name: the template's name.
        prefix: constant pieces before the query (each tokenized apart).
        instruction: the instruction piece's format (``{instruction}``), joined in front of the
            query's text, or ``""`` when the model takes no instruction.
        query: the query piece's format (``{query}``).
        between: constant pieces between the query and the document.
        document: the document piece's format (``{document}``).
        suffix: constant pieces after the document (the assistant prefill).
        joint: the instruction, query, between, document and suffix pieces are one text,
            tokenized together (Qwen3-Reranker, monoT5), instead of apart (mxbai, bge-gemma).
        default_instruction: the instruction used when a call gives none (``None``: no instruction).
        positive: the token whose logit says "relevant" (``"yes"``, ``"1"``, ``"Yes"``, ``"true"``).
        negative: the token it is read against, or ``None`` for the positive logit alone.
        bos: start with the tokenizer's beginning-of-sequence token.
        eos: end with the tokenizer's end-of-sequence token (T5's ``</s>``).
    """

    name: str
    prefix: tuple[str, ...] = ()
    instruction: str = ""
    query: str = "{query}"
    between: tuple[str, ...] = ()
    document: str = "{document}"
    suffix: tuple[str, ...] = ()
    joint: bool = False
    default_instruction: str | None = None
    positive: str = "yes"
    negative: str | None = "no"
    bos: bool = False
    eos: bool = False

    def query_text(self, query: str, instruction: str | None) -> str:
        """Return the query piece's text, with the instruction in front when the template takes one."""
        text = self.query.format(query=query)
        used = instruction if instruction is not None else self.default_instruction
        if self.instruction and used:
            text = self.instruction.format(instruction=used) + text
        return text

    def document_text(self, document: str) -> str:
        """Return the document piece's text."""
        return self.document.format(document=document)

    def with_overrides(self, data: Mapping[str, Any]) -> Template:
        """Return a copy with the fields of ``data`` replaced (lists become tuples).

        Raises:
            ConfigError: ``data`` names a field a template does not have.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown template fields {unknown}; a template has {sorted(known)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return replace(self, **values)


_QWEN3_SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
_MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your "
    "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
_BGE_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)

#: every template crossrank knows, by name
TEMPLATES: dict[str, Template] = {
    # Qwen/Qwen3-Reranker-0.6B/4B/8B model card: P("yes") of a softmax over ("no", "yes")
    "qwen3-reranker": Template(
        name="qwen3-reranker",
        prefix=(_QWEN3_SYSTEM,),
        instruction="<Instruct>: {instruction}\n",
        query="<Query>: {query}\n",
        document="<Document>: {document}",
        suffix=("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
        joint=True,
        default_instruction="Given a web search query, retrieve relevant passages that answer the query",
        positive="yes",
        negative="no",
    ),
    # mixedbread-ai/mxbai-rerank-base-v2 / -large-v2 (the mxbai-rerank package): logit("1") - logit("0")
    "mxbai-rerank-v2": Template(
        name="mxbai-rerank-v2",
        prefix=(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n",
        ),
        instruction="instruction: {instruction}\n",
        query="query: {query}",
        between=("\n",),
        document="document: {document}",
        suffix=("\n", _MXBAI_TASK, "<|im_end|>\n<|im_start|>assistant\n"),
        positive="1",
        negative="0",
    ),
    # BAAI/bge-reranker-v2-gemma (FlagEmbedding's FlagLLMReranker): the logit of "Yes"
    "bge-reranker-gemma": Template(
        name="bge-reranker-gemma",
        query="A: {query}",
        between=("\n",),
        document="B: {document}",
        suffix=("\n", _BGE_GEMMA_PROMPT),
        positive="Yes",
        negative=None,
        bos=True,
    ),
    # castorini/monot5-*-msmarco (pygaggle): softmax of "true" against "false" at the first decoder step
    "monot5": Template(
        name="monot5",
        query="Query: {query} Document: ",
        document="{document}",
        suffix=(" Relevant:",),
        joint=True,
        positive="true",
        negative="false",
        eos=True,
    ),
}

#: rerankers whose files do not say what they are, by exact hub id: (family, template)
KNOWN_MODELS: dict[str, tuple[str, str]] = {
    "Qwen/Qwen3-Reranker-0.6B": ("causal-lm", "qwen3-reranker"),
    "Qwen/Qwen3-Reranker-4B": ("causal-lm", "qwen3-reranker"),
    "Qwen/Qwen3-Reranker-8B": ("causal-lm", "qwen3-reranker"),
    "tomaarsen/Qwen3-Reranker-0.6B-seq-cls": ("decoder-classification", "qwen3-reranker"),
    "tomaarsen/Qwen3-Reranker-4B-seq-cls": ("decoder-classification", "qwen3-reranker"),
    "tomaarsen/Qwen3-Reranker-8B-seq-cls": ("decoder-classification", "qwen3-reranker"),
    "mixedbread-ai/mxbai-rerank-base-v2": ("causal-lm", "mxbai-rerank-v2"),
    "mixedbread-ai/mxbai-rerank-large-v2": ("causal-lm", "mxbai-rerank-v2"),
    "BAAI/bge-reranker-v2-gemma": ("causal-lm", "bge-reranker-gemma"),
    "castorini/monot5-base-msmarco": ("t5", "monot5"),
    "castorini/monot5-base-msmarco-10k": ("t5", "monot5"),
    "castorini/monot5-large-msmarco": ("t5", "monot5"),
    "castorini/monot5-large-msmarco-10k": ("t5", "monot5"),
    "castorini/monot5-3b-msmarco": ("t5", "monot5"),
    "castorini/monot5-3b-msmarco-10k": ("t5", "monot5"),
}


def template_for(name: str, settings: Mapping[str, Any], *, default: str | None) -> Template:
    """Return a model's template: its ``crossrank.json`` ``"template"``, its hub id's, or ``default``.

    ``settings["template"]`` is a template's name, or a mapping with an optional ``"base"`` (a
    name) and fields to override.

    Raises:
        ConfigError: no template is named and none is known for the model, or the name is unknown.
    """
    saved = settings.get("template")
    base_name = KNOWN_MODELS.get(name, ("", default or ""))[1] or default
    overrides: Mapping[str, Any] = {}
    if isinstance(saved, str):
        base_name = saved
    elif isinstance(saved, Mapping):
        overrides = {k: v for k, v in saved.items() if k != "base"}
        base_name = str(saved.get("base", base_name or "")) or None
    elif saved is not None:
        raise ConfigError(f"crossrank.json 'template' must be a name or a table (got {type(saved).__name__})")
    if not base_name:
        raise ConfigError(
            f"{name!r} needs a prompt template: pass template=<name> (one of {sorted(TEMPLATES)}) or save "
            '{"template": ...} in its crossrank.json'
        )
    if base_name not in TEMPLATES:
        raise ConfigError(f"unknown template {base_name!r}; known: {sorted(TEMPLATES)}")
    template = TEMPLATES[base_name]
    return template.with_overrides(overrides) if overrides else template
