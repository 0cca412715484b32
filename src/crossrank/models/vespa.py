"""Export a cross-encoder as a folder for Vespa, which scores it inside its own ranking.

Vespa does not call out to a reranker: it runs an ONNX cross-encoder in a rank profile, fed with
token ids that its ``hugging-face-tokenizer`` component made from the query (at query time) and
from the document (at feed time). The folder holds what an application package needs for that:

- ``model.onnx``: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for models with
  segment embeddings), output ``logits``, dynamic batch and sequence axes; fp32 or dynamic int8;
- ``tokenizer.json``: the model's fast tokenizer, byte for byte, so Vespa's ids are crossrank's;
- ``schema-fragment.sd`` and ``services-fragment.xml``: the field, ``onnx-model`` and rank profile,
  and the tokenizer component, to paste into the application;
- ``README.md`` (how to drop them in) and ``crossrank_vespa.json`` (the layout, machine-readable).

Vespa builds a pair as ``start + query + sep + document + sep`` (``customTokenInputIds``). A
tokenizer whose pairs carry two separators between the segments (RoBERTa, XLM-R) gets an empty
input between query and document, which adds the second separator, so the ids equal the
tokenizer's own pair encoding whenever the pair fits in ``max_length`` tokens.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossrank._logs import muted
from crossrank.errors import ConfigError, InputError
from crossrank.models.tokenizer import load_tokenizer, model_max_length, uses_token_types

__all__ = ["VespaLayout", "export_vespa", "pair_layout", "schema_fragment", "services_fragment"]

log = logging.getLogger(__name__)

#: names the fragments give the model, tokenizer component, token field, query input and rank profile
MODEL_NAME = "crossrank"
TOKENIZER_COMPONENT = "crossrank_tokenizer"
TOKENS_FIELD = "crossrank_tokens"
QUERY_INPUT = "query(crossrank_q)"
RANK_PROFILE = "crossrank"
#: where the fragments expect the two files inside the application package
APP_FOLDER = "models/crossrank"
#: the config that turns off the tokenizer's own special tokens (the rank profile adds them)
TOKENIZER_CONFIG = "language.huggingface.config.hugging-face-tokenizer"
#: Vespa's tensors are sized when the schema is written; longer positions cost quadratic time
DEFAULT_MAX_LENGTH = 512

_NO_TOKENS = "crossrank_no_tokens"


@dataclass(frozen=True, slots=True)
class VespaLayout:
    """How the exported rank profile lays out a (query, document) pair for the model.

    Attributes:
        max_length: tokens per pair, special tokens included (the ONNX inputs' length in Vespa).
        query_tokens: most query tokens Vespa keeps (the size of ``query(crossrank_q)``).
        start_id: the token that opens a pair (``[CLS]``, ``<s>``).
        sep_id: the separator after each segment (``[SEP]``, ``</s>``).
        separators: separators between query and document: 1 (BERT, ModernBERT) or 2 (RoBERTa, XLM-R).
        token_type_ids: whether the model takes segment ids.
        label_index: the column of ``logits`` that is the relevance score.
        quantize: ``"none"`` (fp32) or ``"int8"`` (ONNX Runtime dynamic int8).
    """

    max_length: int
    query_tokens: int
    start_id: int
    sep_id: int
    separators: int
    token_type_ids: bool
    label_index: int
    quantize: str

    def to_dict(self) -> dict[str, Any]:
        """Return the layout as a JSON-ready dict."""
        return asdict(self)


def pair_layout(tokenizer_file: str | Path) -> tuple[int, int, int]:
    """Return ``(start_id, sep_id, separators)`` of the tokenizer's pair template.

    Raises:
        ConfigError: the template is not ``start A sep B sep`` or ``start A sep sep B sep``, which
            Vespa's ``customTokenInputIds`` cannot build.
    """
    tok = load_tokenizer(tokenizer_file)
    tok.no_truncation()
    tok.no_padding()
    enc = tok.encode("what is a cell wall", "the wall of a cell")
    parts: list[list[int]] = [[]]
    seen: list[int] = []
    for tid, seq in zip(enc.ids, enc.sequence_ids, strict=True):
        if seq is None:
            parts[-1].append(tid)
        elif not seen or seen[-1] != seq:
            seen.append(seq)
            parts.append([])
    if seen == [0, 1] and len(parts) == 3:
        head, middle, tail = parts
        if len(head) == 1 and len(tail) == 1 and middle in ([tail[0]], [tail[0], tail[0]]):
            return head[0], tail[0], len(middle)
    template = " ".join(f"<{t}>" for t in enc.tokens)
    raise ConfigError(
        f"cannot lay out pairs of this tokenizer for Vespa (pair template {template!r}): "
        "Vespa's customTokenInputIds builds only 'start A sep B sep' or 'start A sep sep B sep'"
    )


def export_vespa(
    source: str | Path,
    output: str | Path,
    *,
    quantize: str = "none",
    max_length: int | None = None,
    query_tokens: int = 32,
    relevance_label: str | int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the Hugging Face cross-encoder ``source`` as a folder for Vespa; return the folder.

    Args:
        source: a Hugging Face cross-encoder folder or hub id (an encoder classifier).
        output: the folder to write.
        quantize: ``"none"`` writes the fp32 graph, ``"int8"`` ONNX Runtime's dynamic int8 graph.
        max_length: tokens per pair; ``None`` is the model's limit, at most 512.
        query_tokens: most query tokens Vespa keeps (crossrank keeps queries whole).
        relevance_label: for heads with several labels, the one that scores relevance (name or index).
        overwrite: replace a non-empty ``output``.

    Raises:
        ConfigError: ``source`` is a decoder or T5 reranker, a setting is out of range, a multi-label
            head has no ``relevance_label``, or the tokenizer's pair template does not fit Vespa.
        InputError: ``output`` is not empty and ``overwrite`` is false.
        MissingDependencyError: torch, transformers or onnxruntime is not installed.
        ModelError: the model cannot be loaded or exported.

    Example:
        >>> export_vespa("path/to/hf-cross-encoder", "vespa-out")  # doctest: +SKIP
    """
    from crossrank.models.export import export_onnx
    from crossrank.models.source import check_encoder_classifier, resolve

    if quantize not in ("none", "int8"):
        raise ConfigError(f"quantize must be 'none' or 'int8' for Vespa (got {quantize!r})")
    files = resolve(source)
    check_encoder_classifier(files, "export for Vespa")
    limit = model_max_length(files.config)
    length = min(limit, DEFAULT_MAX_LENGTH) if max_length is None else max_length
    if not 8 <= length <= limit:
        raise ConfigError(f"max_length must be in [8, {limit}] for this model (got {length})")
    if not 1 <= query_tokens <= length - 4:
        raise ConfigError(f"query_tokens must be in [1, {length - 4}] (got {query_tokens}); lower it")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or pass overwrite")
    start_id, sep_id, separators = pair_layout(files.tokenizer_file)
    layout = VespaLayout(
        max_length=length,
        query_tokens=query_tokens,
        start_id=start_id,
        sep_id=sep_id,
        separators=separators,
        token_type_ids=uses_token_types(files.config),
        label_index=_label_index(files.config, relevance_label),
        quantize=quantize,
    )
    work = out.with_name(out.name + ".vespa-work")
    shutil.rmtree(work, ignore_errors=True)
    try:
        plain = export_onnx(source, work / "fp32")
        final = work / "final"
        final.mkdir()
        if quantize == "int8":
            _quantize_int8(plain / "model.onnx", final / "model.onnx")
        else:
            shutil.move(plain / "model.onnx", final / "model.onnx")
        shutil.copyfile(files.tokenizer_file, final / "tokenizer.json")
        (final / "schema-fragment.sd").write_text(schema_fragment(layout), encoding="utf-8")
        (final / "services-fragment.xml").write_text(services_fragment(), encoding="utf-8")
        (final / "README.md").write_text(_readme(str(files.name), layout), encoding="utf-8")
        meta = {"exported_from": str(files.name), **layout.to_dict()}
        (final / "crossrank_vespa.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _label_index(config: dict[str, Any], label: str | int | None) -> int:
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    n = int(config.get("num_labels") or len(id2label) or 1)
    if label is None:
        if n == 1:
            return 0
        names = ", ".join(id2label.get(i, str(i)) for i in range(n))
        raise ConfigError(f"the model has {n} labels ({names}); pass relevance_label to say which one scores relevance")
    if isinstance(label, int) and not isinstance(label, bool):
        if 0 <= label < n:
            return label
        raise ConfigError(f"relevance_label must be in [0, {n - 1}] (got {label})")
    for i, name in id2label.items():
        if name == label:
            return i
    raise ConfigError(f"relevance_label {label!r} is not a label of the model ({', '.join(id2label.values())})")


def _quantize_int8(fp32: Path, int8: Path) -> None:
    from crossrank._deps import require

    require("onnxruntime", feature="int8 export")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantizer logs generic advice at WARNING on the root logger
    with muted(logging.getLogger()):
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)


def _block(name: str, body: list[str]) -> list[str]:
    return [f"{name} {{", *("    " + line for line in body), "}"]


def _expression(text: str) -> list[str]:
    return _block("expression", [text])


def schema_fragment(layout: VespaLayout) -> str:
    """Return the schema text (field, ``onnx-model``, rank profile) for ``layout``, indented for a schema body."""
    n = layout.max_length
    segments = [QUERY_INPUT, *([_NO_TOKENS] if layout.separators == 2 else []), f"attribute({TOKENS_FIELD})"]
    args = ", ".join(segments)
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if layout.token_type_ids else [])]
    functions: list[str] = []
    if layout.separators == 2:
        # an empty segment: customTokenInputIds then writes a second separator between query and document
        functions += _block(f"function {_NO_TOKENS}()", _expression("tensor<float>(d0[1]):[0]"))
    functions += _block(
        f"function {MODEL_NAME}_input_ids()",
        _expression(f"customTokenInputIds({layout.start_id}, {layout.sep_id}, {n}, {args})"),
    )
    functions += _block(f"function {MODEL_NAME}_attention_mask()", _expression(f"tokenAttentionMask({n}, {args})"))
    if layout.token_type_ids:
        functions += _block(f"function {MODEL_NAME}_token_type_ids()", _expression(f"tokenTypeIds({n}, {args})"))
    profile = [
        *_block("inputs", [f"{QUERY_INPUT} tensor<float>(d0[{layout.query_tokens}])"]),
        *functions,
        *_block("first-phase", _expression("bm25(text)")),
        *_block(
            "global-phase",
            [*_expression(f"onnx({MODEL_NAME}).logits{{d0:0,d1:{layout.label_index}}}"), "rerank-count: 100"],
        ),
    ]
    body = [
        *_block(
            f"field {TOKENS_FIELD} type tensor<float>(d0[{n}])",
            [f"indexing: input text | embed {TOKENIZER_COMPONENT} | attribute"],
        ),
        *_block(
            f"onnx-model {MODEL_NAME}",
            [
                f"file: {APP_FOLDER}/model.onnx",
                *(f"input {name}: {MODEL_NAME}_{name}" for name in inputs),
                "output logits: logits",
            ],
        ),
        *_block(f"rank-profile {RANK_PROFILE} inherits default", profile),
    ]
    header = [
        "# crossrank's cross-encoder for Vespa: paste into your schema, after its `document` block.",
        "# `text` is the document field the model reads (rename it), and `bm25(text)` is the first phase",
        f"# (use your retriever's). Pairs are {n} tokens; queries keep at most {layout.query_tokens} tokens.",
    ]
    return "\n".join(header + ["    " + line for line in body]) + "\n"


def services_fragment() -> str:
    """Return the ``services.xml`` component that tokenizes for the rank profile (add it inside ``<container>``)."""
    return (
        "<!-- crossrank's cross-encoder for Vespa: add inside your <container> element. The rank profile\n"
        "     adds the special tokens itself, so the tokenizer must not. -->\n"
        f'<component id="{TOKENIZER_COMPONENT}" type="hugging-face-tokenizer">\n'
        f'    <model path="{APP_FOLDER}/tokenizer.json"/>\n'
        f'    <config name="{TOKENIZER_CONFIG}">\n'
        "        <addSpecialTokens>false</addSpecialTokens>\n"
        "    </config>\n"
        "</component>\n"
    )


def _readme(source: str, layout: VespaLayout) -> str:
    precision = "int8 (ONNX Runtime dynamic quantization)" if layout.quantize == "int8" else "fp32"
    sep = "one separator" if layout.separators == 1 else "two separators"
    types = "input_ids, attention_mask, token_type_ids" if layout.token_type_ids else "input_ids, attention_mask"
    return f"""# {source} for Vespa

Exported by `crossrank models export --format vespa`. Max length: **{layout.max_length} tokens** per
(query, document) pair, special tokens included; queries keep at most {layout.query_tokens} tokens.

| file | what |
|---|---|
| `model.onnx` | the cross-encoder, {precision}; inputs {types}; output `logits` |
| `tokenizer.json` | the model's own tokenizer, unchanged |
| `schema-fragment.sd` | the token field, `onnx-model` and the `{RANK_PROFILE}` rank profile |
| `services-fragment.xml` | the `{TOKENIZER_COMPONENT}` hugging-face-tokenizer component |
| `crossrank_vespa.json` | the pair layout below, machine-readable |

## Dropping it into an application package

1. Copy the model and tokenizer: `mkdir -p app/{APP_FOLDER} && cp model.onnx tokenizer.json app/{APP_FOLDER}/`.
2. Paste `services-fragment.xml` inside the `<container>` element of `app/services.xml`.
3. Paste `schema-fragment.sd` into your schema after its `document` block. Rename `text` to the field
   holding the passage text, and set the first phase to your retriever's.
4. Deploy (`vespa deploy app`), feed, and query with the profile:

   ```json
   {{"yql": "select * from sources * where userQuery()", "query": "what is a cell wall",
    "ranking": "{RANK_PROFILE}", "input.{QUERY_INPUT}": "embed({TOKENIZER_COMPONENT}, @query)"}}
   ```

The score is `onnx({MODEL_NAME}).logits{{d0:0,d1:{layout.label_index}}}`: the raw logit, as crossrank's
`activation="none"`; apply `sigmoid(...)` in the global phase for a probability.

## Pair layout

Pairs are `{layout.start_id} + query + {sep} ({layout.sep_id}) + document + {layout.sep_id}`, zero-padded to
{layout.max_length}, which is the tokenizer's own pair encoding. The tokenizer component runs with
`addSpecialTokens` off, since `customTokenInputIds` adds the start and separator tokens.

Where Vespa and crossrank differ:

- a pair longer than {layout.max_length} tokens: crossrank cuts the document and keeps the last separator;
  Vespa cuts the whole sequence at {layout.max_length}, so the last separator is lost;
- a query longer than {layout.query_tokens} tokens: Vespa keeps its first {layout.query_tokens} tokens, crossrank
  keeps it whole (raise the size of `{QUERY_INPUT}` to keep more);
- Vespa reads token id 0 as padding, so a vocabulary whose id 0 is a real word token loses it.
"""
