"""Export a Hugging Face cross-encoder folder to an ONNX folder that crossrank's ONNX backend loads."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from crossrank._deps import require
from crossrank.errors import InputError, ModelError
from crossrank.rerank.backends import uses_token_types

__all__ = ["export_onnx"]

_COPY = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "crossrank.json",
)


def export_onnx(source: str | Path, output: str | Path, *, opset: int = 17, overwrite: bool = False) -> Path:
    """Export the fp32 model in the Hugging Face folder ``source`` to ``output/model.onnx``; return ``output``.

    The graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for models with
    segment embeddings) with dynamic batch and sequence axes, and returns ``logits``. The config
    and tokenizer files are copied beside it.

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        InputError: ``output`` is not empty and ``overwrite`` is false.
        ModelError: the model cannot be loaded or exported.
    """
    torch = require("torch", feature="ONNX export")
    transformers = require("transformers", feature="ONNX export")
    from crossrank.models.source import resolve

    files = resolve(source)
    if not files.has_weights:
        raise ModelError(f"{source} has no Hugging Face weights to export")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or pass overwrite")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(files.folder), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types(files.config) else [])
    ids = torch.tensor([[2, 5, 6, 7, 3, 8, 9, 3], [2, 5, 6, 3, 8, 3, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    args: tuple[Any, ...] = (ids, mask) + ((torch.zeros_like(ids),) if len(names) == 3 else ())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    class _Logits(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Logits(model),
                args,
                str(tmp / "model.onnx"),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"ONNX export of {source} failed ({type(err).__name__}: {err})") from err
    for fname in _COPY:
        if (files.folder / fname).is_file():
            shutil.copy2(files.folder / fname, tmp / fname)
    if not (tmp / "tokenizer.json").is_file():
        shutil.copy2(files.tokenizer_file, tmp / "tokenizer.json")
    meta = {"exported_from": str(files.name), "opset": opset, "inputs": names}
    (tmp / "crossrank_export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
