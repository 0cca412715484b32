"""Inference backends: ONNX Runtime (the default) and torch/transformers (fp32).

A backend takes one padded batch and returns raw logits, float32 ``(batch, num_labels)``.
"""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.cpu import available_cores
from crossrank.errors import ModelError

__all__ = ["Backend", "OnnxBackend", "OpenVinoBackend", "TorchBackend", "default_threads"]

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Runs a cross-encoder on one padded batch.

    ``parallelism`` is how many batches the backend can run at once from different threads
    (each on its own session or infer request); the engine keeps that many in flight.
    """

    num_labels: int
    parallelism: int

    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """Return the raw logits, float32 ``(batch, num_labels)``."""
        ...


def default_threads() -> int:
    """Return the number of cores this process may use: affinity mask and cgroup quota, or ``$CROSSRANK_THREADS``."""
    return available_cores()


def _affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def uses_token_types(config: dict[str, Any]) -> bool:
    """Return whether the model reads segment ids (BERT, ELECTRA: yes; RoBERTa, DistilBERT: no)."""
    return int(config.get("type_vocab_size", 0) or 0) >= 2


def graph_feed(
    input_names: set[str],
    use_types: bool,
    input_ids: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64],
    token_type_ids: npt.NDArray[np.int64],
) -> dict[str, npt.NDArray[Any]]:
    """Return the inputs a graph takes; segment ids are zeros for models without segment embeddings."""
    feed: dict[str, npt.NDArray[Any]] = {"input_ids": input_ids}
    if "attention_mask" in input_names:
        feed["attention_mask"] = attention_mask
    if "token_type_ids" in input_names:
        feed["token_type_ids"] = token_type_ids if use_types else np.zeros_like(input_ids)
    return feed


#: the most ONNX Runtime sessions ``instances=None`` starts (the cores are split between them)
MAX_AUTO_INSTANCES = 8


class OnnxBackend:
    """Run an ONNX graph with ONNX Runtime, one session reused for every call.

    Args:
        onnx_file: the graph.
        config: the model's Hugging Face config (decides whether segment ids are fed).
        threads: intra-op threads; defaults to the cores this process may use.
        instances: sessions that run batches side by side, the threads split between them;
            ``None`` is one per thread, up to :data:`MAX_AUTO_INSTANCES`.
    """

    def __init__(
        self, onnx_file: Path, config: dict[str, Any], *, threads: int | None = None, instances: int | None = None
    ) -> None:
        import onnxruntime as ort

        total = threads or default_threads()
        # one single-threaded session per core (up to 8) measured fastest: batches run side by side
        # with no synchronisation inside a matrix product
        instances = max(1, min(instances or MAX_AUTO_INSTANCES, total))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = max(1, total // instances)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if instances > 1:  # sessions share the cores: spinning threads would steal them from each other
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            sessions = [
                ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"]) for _ in range(instances)
            ]
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ModelError(f"ONNX Runtime cannot load {onnx_file} ({err}); re-export or re-download it") from err
        self.session = sessions[0]
        self.model_file = onnx_file
        self.parallelism = instances
        # A dynamically quantized graph scales each activation tensor by the batch's own range, so
        # a pair's score would move with its batch-mates. One pair per call keeps every score its
        # own; on CPUs it costs nothing (2 AVX2 cores: 45.5 pairs/s at one pair per call, 41.2 at
        # 16), since a pair's tokens alone fill the matrix products and no padding is read.
        self.max_batch_size: int | None = 1 if _has_dynamic_quantization(onnx_file) else None
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for sess in sessions:
            self._pool.put(sess)
        self.input_names = {i.name for i in self.session.get_inputs()}
        if "input_ids" not in self.input_names:
            raise ModelError(
                f"{onnx_file} has no 'input_ids' input (inputs: {sorted(self.input_names)}); "
                "it is not a text cross-encoder graph"
            )
        self._int32 = {i.name for i in self.session.get_inputs() if i.type == "tensor(int32)"}
        # A graph with a token_type_ids input but a model without segment embeddings gets zeros.
        self._types = "token_type_ids" in self.input_names and (uses_token_types(config) or not config)
        out = self.session.get_outputs()[0]
        dim = out.shape[-1] if len(out.shape) > 1 else 1
        self.num_labels = int(dim) if isinstance(dim, int) else int(config.get("num_labels", 0) or 1)
        self.output_name = out.name

    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """Return the raw logits, float32 ``(batch, num_labels)``."""
        feed = graph_feed(self.input_names, self._types, input_ids, attention_mask, token_type_ids)
        for name in self._int32 & feed.keys():
            feed[name] = feed[name].astype(np.int32)
        session = self._pool.get()
        try:
            (logits,) = session.run([self.output_name], feed)
        finally:
            self._pool.put(session)
        return np.asarray(logits, dtype=np.float32).reshape(input_ids.shape[0], -1)


def _has_dynamic_quantization(onnx_file: Path) -> bool:
    """Return whether the graph quantizes activations at run time (``DynamicQuantizeLinear``)."""
    try:
        # op types are stored as plain strings in the protobuf: no need to parse the graph
        return b"DynamicQuantizeLinear" in Path(onnx_file).read_bytes()
    except OSError:
        return False


class TorchBackend:
    """Run a Hugging Face ``AutoModelForSequenceClassification`` in fp32 with torch.

    Args:
        folder: a Hugging Face model folder.
        config: its config (decides whether segment ids are fed).
        threads: torch intra-op threads; defaults to the cores this process may use.
    """

    def __init__(self, folder: Path, config: dict[str, Any], *, threads: int | None = None) -> None:
        torch = require("torch", feature="backend 'torch'")
        require("transformers", feature="backend 'torch'")
        torch.set_num_threads(threads or default_threads())
        try:
            from crossrank.models.hf import load_classifier

            model = load_classifier(folder, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"transformers cannot load {folder} ({err})") from err
        self.model = model.eval()
        self.parallelism = 1
        self.num_labels = int(model.config.num_labels)
        self._types = uses_token_types(config)
        self._torch = torch

    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """Return the raw logits, float32 ``(batch, num_labels)``."""
        torch = self._torch
        kwargs = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
        }
        if self._types:
            kwargs["token_type_ids"] = torch.from_numpy(token_type_ids)
        with torch.inference_mode():
            logits = self.model(**kwargs).logits
        out: npt.NDArray[np.float32] = logits.float().numpy().reshape(input_ids.shape[0], -1)
        return out


class OpenVinoBackend:
    """Run an OpenVINO IR or ONNX graph with OpenVINO on the CPU, several infer requests in flight.

    Args:
        model_file: ``model.xml`` (OpenVINO IR) or an ``.onnx`` graph.
        config: the model's Hugging Face config (decides whether segment ids are fed).
        threads: inference threads; defaults to the cores this process may use.
        precision: ``"auto"`` runs non-quantized parts in bf16 where the CPU has native bf16, else
            fp32; ``"fp32"`` and ``"bf16"`` force it.
    """

    def __init__(
        self, model_file: Path, config: dict[str, Any], *, threads: int | None = None, precision: str = "auto"
    ) -> None:
        ov = require("openvino", feature="backend 'openvino'")
        core = ov.Core()
        total = threads or default_threads()
        if precision == "auto":
            caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            precision = "bf16" if "BF16" in caps else "fp32"
        props = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_NUM_THREADS": str(total),
            "NUM_STREAMS": str(total),  # one single-threaded stream per core measured fastest
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        if total < _affinity_cores():
            # OpenVINO pins its threads to the first cores; several processes on one machine
            # (Ray workers, server replicas) would all pin to the same ones and share them
            props["ENABLE_CPU_PINNING"] = "NO"
        try:
            model = core.read_model(str(model_file))
            compiled = core.compile_model(model, "CPU", props)
        except Exception as err:  # openvino raises RuntimeError subclasses of its own
            raise ModelError(f"OpenVINO cannot load {model_file} ({err}); re-export it") from err
        self.precision = precision
        self.model_file = model_file
        self.input_names = {i.get_any_name() for i in compiled.inputs}
        if "input_ids" not in self.input_names:
            raise ModelError(f"{model_file} has no 'input_ids' input (inputs: {sorted(self.input_names)})")
        self._types = "token_type_ids" in self.input_names and (uses_token_types(config) or not config)
        out_shape = compiled.outputs[0].get_partial_shape()
        last = out_shape[out_shape.rank.get_length() - 1]
        self.num_labels = last.get_length() if last.is_static else int(config.get("num_labels", 1) or 1)
        n_req = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.parallelism = max(1, n_req)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.parallelism):
            self._pool.put(compiled.create_infer_request())
        self._compiled = compiled
        # The first inference ever, started on several threads at once, can hang inside the
        # bindings' one-time numpy setup; one tiny inference here, on this thread, does that setup.
        one = np.ones((1, 2), dtype=np.int64)
        self.run(one, one, np.zeros((1, 2), dtype=np.int64))

    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """Return the raw logits, float32 ``(batch, num_labels)``."""
        feed = graph_feed(self.input_names, self._types, input_ids, attention_mask, token_type_ids)
        request = self._pool.get()
        try:
            result = request.infer(feed)
            logits = np.array(result[0], dtype=np.float32)  # copy: the request reuses its buffer
        finally:
            self._pool.put(request)
        return logits.reshape(input_ids.shape[0], -1)
