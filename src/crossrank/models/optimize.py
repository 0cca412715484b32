"""Graph work on ONNX cross-encoders: undo int8 quantization, fuse, and re-quantize.

``dequantize_graph`` turns a dynamically quantized graph (``DynamicQuantizeLinear`` +
``MatMulInteger``) back into a plain fp32 graph with dequantized weights. From there ONNX
Runtime's transformer optimizer can fuse attention and layer norm, and a better quantization
can be applied.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from crossrank._deps import require
from crossrank._logs import muted
from crossrank.errors import ModelError

__all__ = ["dequantize_graph"]


def dequantize_graph(onnx_file: str | Path, *, check: bool = True) -> Any:
    """Return an fp32 ``onnx.ModelProto`` equal to the int8 graph with its weights dequantized.

    ``check=False`` skips ONNX's model checker (almost a second on a 33M-parameter graph), for
    callers that hand the graph straight to a tool that validates it anyway.

    Raises:
        ModelError: the graph has a quantized pattern this function does not know.
    """
    onnx = require("onnx", feature="ONNX graph optimization")
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_file))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)

    def deq(q: str, scale: str, zp: str) -> np.ndarray:
        qa = numpy_helper.to_array(init[q]).astype(np.float32)
        za = numpy_helper.to_array(init[zp]).astype(np.float32)
        return ((qa - za) * numpy_helper.to_array(init[scale]).astype(np.float32)).astype(np.float32)

    drop: set[int] = set()
    new_nodes: dict[int, Any] = {}  # replaces the node at this id
    new_inits: list[Any] = []
    for node in graph.node:
        if node.op_type == "MatMulInteger":
            a_q, w_q, _, w_zp = node.input
            dql = producer.get(a_q)
            if dql is None or dql.op_type != "DynamicQuantizeLinear" or w_q not in init:
                raise ModelError(f"{onnx_file}: unsupported quantized MatMul {node.name!r}")
            (cast,) = consumers[node.output[0]]
            (mul,) = consumers[cast.output[0]]
            if cast.op_type != "Cast" or mul.op_type != "Mul":
                raise ModelError(f"{onnx_file}: unexpected pattern after {node.name!r}")
            w_name = w_q[: -len("_quantized")] + "_fp32"
            new_inits.append(numpy_helper.from_array(deq(w_q, w_name[:-5] + "_scale", w_zp), w_name))
            new_nodes[id(node)] = helper.make_node("MatMul", [dql.input[0], w_name], [mul.output[0]], name=node.name)
            drop.update({id(cast), id(mul)})
            scale_mul = producer.get(mul.input[1])
            if scale_mul is not None and scale_mul.op_type == "Mul":
                drop.add(id(scale_mul))
        elif node.op_type == "DequantizeLinear" and node.input[0] in producer:
            gather = producer[node.input[0]]
            if gather.op_type != "Gather" or gather.input[0] not in init:
                continue
            table = gather.input[0]
            w_name = table[: -len("_quantized")] + "_fp32"
            new_inits.append(numpy_helper.from_array(deq(table, node.input[1], node.input[2]), w_name))
            new_nodes[id(node)] = helper.make_node(
                "Gather", [w_name, gather.input[1]], [node.output[0]], name=node.name
            )
            drop.add(id(gather))
    nodes = [new_nodes.get(id(n), n) for n in graph.node if id(n) not in drop]
    used = {i for n in nodes for i in n.input}
    nodes = [n for n in nodes if n.op_type != "DynamicQuantizeLinear" or used & set(n.output)]
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if check:
        onnx.checker.check_model(model)
    return model


def optimize_graph(
    source: str | Path,
    output: str | Path,
    *,
    num_heads: int,
    hidden_size: int,
    quantize: str = "int8",
) -> Path:
    """Write a fused (and optionally int8-quantized) copy of a BERT-style ONNX graph; return its path.

    An int8 source is dequantized first, so fusion sees the plain fp32 pattern. Attention, layer
    norm, GELU and embeddings are fused by ONNX Runtime's transformer optimizer; ``quantize="int8"``
    then applies dynamic int8 quantization (per-tensor weights, which measured best on DL 2019).
    The graph stays in memory between the steps and the optimizer's symbolic shape inference is
    off (it only turns the two head ``MatMul + Add`` pairs into ``Gemm``, which int8 quantization
    turns back): the default's graph builds in about 5 s instead of 18 s, with the same scores.
    The file is written to a temporary name and renamed, so a crash leaves no half-written graph.

    Raises:
        ModelError: the graph cannot be optimized.
    """
    require("onnx", feature="ONNX graph optimization")
    import logging as _logging

    from onnx import helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if quantize not in ("int8", "none"):
        raise ModelError(f"quantize must be 'int8' or 'none' (got {quantize!r})")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        plain = dequantize_graph(source, check=False)  # the optimizer and quantizer validate it
        options = FusionOptions("bert")
        options.enable_shape_inference = False
        # the optimizer and quantizer log advice at WARNING on their own and on the root logger
        quiet = [_logging.getLogger(), _logging.getLogger("onnxruntime"), *_ort_loggers()]
        with muted(*quiet):
            fused = optimize_model(
                plain,
                model_type="bert",
                num_heads=num_heads,
                hidden_size=hidden_size,
                opt_level=0,
                optimization_options=options,
            ).model
            if not any(op.domain == "com.microsoft" for op in fused.opset_import):
                fused.opset_import.append(helper.make_opsetid("com.microsoft", 1))
            if quantize == "int8":
                quantize_dynamic(fused, str(tmp), weight_type=QuantType.QInt8, per_channel=False)
            else:
                _save(fused, tmp)
        tmp.replace(out)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"could not optimize {source} ({type(err).__name__}: {err})") from err
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _ort_loggers() -> list[Any]:
    import logging as _logging

    return [
        _logging.getLogger(name)
        for name in list(_logging.root.manager.loggerDict)
        if name.startswith(("onnxruntime", "fusion", "onnx_model", "optimizer", "shape_infer"))
    ]


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def quantize_openvino(
    source: str | Path,
    output_dir: str | Path,
    *,
    tokenizer_file: str | Path,
    max_length: int,
    calibration: tuple[list[str], list[str]] | None = None,
    single_texts: bool = False,
) -> Path:
    """Write a statically quantized int8 OpenVINO model (``model.xml`` + ``model.bin``); return the folder.

    The graph (int8 or fp32 ONNX) is dequantized to fp32, then NNCF calibrates int8 ranges for
    every matrix product on ``calibration`` pairs (by default :func:`calibration_pairs` of
    :func:`stdlib_pairs`), with
    SmoothQuant and bias correction for transformers. ``single_texts=True`` calibrates a bi-encoder:
    the queries and documents are fed as separate texts, as it will see them. Fixed ranges make a
    pair's score independent of its batch-mates. Written to a temporary folder and renamed.

    Raises:
        MissingDependencyError: openvino or nncf is not installed.
        ModelError: quantization failed.
    """
    onnx = require("onnx", feature="OpenVINO quantization")
    ov = require("openvino", feature="OpenVINO quantization")
    nncf = require("nncf", feature="OpenVINO quantization")
    import logging as _logging

    from crossrank.models.calibration import calibration_pairs, stdlib_pairs
    from crossrank.models.encoding import PairEncoder

    out = Path(output_dir)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    queries, docs = calibration or stdlib_pairs(calibration_pairs())
    if single_texts:
        enc = _single_texts(tokenizer_file, [*queries, *docs], max_length)
    else:
        enc = PairEncoder(tokenizer_file, max_length=max_length).encode(queries, docs)
    items = []
    for i in range(0, len(enc), 4):
        w = int(enc.lengths[i : i + 4].max())
        items.append(
            {
                "input_ids": enc.input_ids[i : i + 4, :w],
                "attention_mask": enc.attention_mask[i : i + 4, :w],
                "token_type_ids": enc.token_type_ids[i : i + 4, :w],
            }
        )
    try:
        plain = tmp / "plain.onnx"
        onnx.save(dequantize_graph(source), str(plain))
        model = ov.Core().read_model(str(plain))
        names = {i.get_any_name() for i in model.inputs}
        data = [{k: v for k, v in item.items() if k in names} for item in items]
        # NNCF draws its progress bars on stdout, where crossrank's results go: send them to stderr.
        with contextlib.redirect_stdout(sys.stderr), muted(_logging.getLogger("nncf")):
            quantized = nncf.quantize(
                model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data)
            )
        final = tmp / "final"
        final.mkdir()
        ov.save_model(quantized, str(final / "model.xml"))
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    except Exception as err:
        raise ModelError(f"OpenVINO int8 quantization of {source} failed ({type(err).__name__}: {err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _single_texts(tokenizer_file: str | Path, texts: list[str], max_length: int) -> Any:
    """Return texts encoded one per row (no pairs), padded, sorted by length, as the pair encoder's arrays."""
    import numpy as np
    from tokenizers import Tokenizer

    from crossrank.models.encoding import EncodedPairs

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_length)
    encs = sorted(tok.encode_batch(texts), key=lambda e: len(e.ids))
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), np.int64)
    mask = np.zeros((len(encs), width), np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    lengths = mask.sum(axis=1).astype(np.int32)
    return EncodedPairs(ids, mask, np.zeros_like(ids), lengths, np.zeros(len(encs), np.bool_))
