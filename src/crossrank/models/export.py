"""Export a Hugging Face cross-encoder folder to an ONNX folder that crossrank's ONNX backend loads."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from crossrank._deps import require
from crossrank._logs import muted
from crossrank.errors import InputError, ModelError
from crossrank.models.tokenizer import uses_token_types

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
    require("transformers", feature="ONNX export")
    from crossrank.models.source import check_encoder_classifier, resolve

    files = resolve(source)
    check_encoder_classifier(files, "export")
    if not files.has_weights:
        raise ModelError(f"{source} has no Hugging Face weights to export")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or pass overwrite")
    from crossrank.models.hf import load_classifier

    model = load_classifier(files.folder, dtype=torch.float32, attn_implementation="eager").eval()
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


def export_optimized(
    source: str | Path,
    output: str | Path,
    *,
    quantize: str = "int8",
    calibration: tuple[list[str], list[str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Turn a Hugging Face cross-encoder into an optimised folder for crossrank; return the folder.

    The folder holds ``model.onnx`` (for ONNX Runtime) and ``model.xml``/``model.bin`` (for OpenVINO,
    which ``backend="auto"`` prefers), with the tokenizer and config:

    - ``quantize="int8"``: OpenVINO static int8 (NNCF, calibrated on ``calibration`` pairs or on
      :func:`~crossrank.models.calibration.stdlib_pairs`) and ONNX Runtime dynamic int8;
    - ``quantize="bf16"``: fp32 graphs that OpenVINO runs in bf16;
    - ``quantize="none"``: fp32 graphs, run in fp32.

    Raises:
        ConfigError: ``quantize`` is not one of the three.
        MissingDependencyError: torch/transformers (export) or openvino/nncf is missing.
    """
    import json as _json

    from crossrank.errors import ConfigError
    from crossrank.models.optimize import quantize_openvino
    from crossrank.models.source import resolve

    if quantize not in ("int8", "bf16", "none"):
        raise ConfigError(f"quantize must be 'int8', 'bf16' or 'none' (got {quantize!r})")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or pass overwrite")
    files = resolve(source)
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    try:
        plain = export_onnx(source, work / "fp32")
        max_length = int(files.config.get("max_position_embeddings", 512) or 512)
        if files.config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
            max_length -= 2
        max_length = min(max_length, 512)
        final = work / "final"
        if quantize == "int8":
            quantize_openvino(
                plain / "model.onnx",
                final,
                tokenizer_file=plain / "tokenizer.json",
                max_length=max_length,
                calibration=calibration,
            )
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            # the quantizer logs generic advice at WARNING on the root logger
            with muted(logging.getLogger()):
                # per output channel, as the static OpenVINO graph is: requantizing this graph for
                # OpenVINO (what a built-in model gets) then rounds no weight a second time
                quantize_dynamic(
                    str(plain / "model.onnx"), str(final / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True
                )
            settings: dict[str, Any] = {"scoring": {"precision": "auto"}}
        else:
            ov = require("openvino", feature="OpenVINO export")
            final.mkdir(parents=True)
            shutil.copy2(plain / "model.onnx", final / "model.onnx")
            ov.save_model(
                ov.Core().read_model(str(plain / "model.onnx")), str(final / "model.xml"), compress_to_fp16=False
            )
            settings = {"scoring": {"precision": "bf16" if quantize == "bf16" else "fp32"}}
        for f in plain.iterdir():
            if f.suffix != ".onnx" and not (final / f.name).exists():
                shutil.copy2(f, final / f.name)
        saved = _json.loads((final / "crossrank.json").read_text()) if (final / "crossrank.json").is_file() else {}
        saved.update(settings)
        saved["export"] = {"source": str(source), "quantize": quantize}
        (final / "crossrank.json").write_text(_json.dumps(saved, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
