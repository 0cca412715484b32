"""The ONNX Runtime backend (the default engine on CPUs without int8 dot products)."""

from __future__ import annotations

import queue
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.engine.base import Task, default_threads, graph_feed
from crossrank.errors import ModelError
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles
from crossrank.models.tokenizer import uses_token_types

__all__ = ["MAX_AUTO_INSTANCES", "OnnxBackend"]

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
        task: ``"sequence-classification"`` returns ``(batch, num_labels)`` logits;
            ``"feature-extraction"`` returns the graph's first output as it is.
    """

    def __init__(
        self,
        onnx_file: Path,
        config: Mapping[str, Any],
        *,
        threads: int | None = None,
        instances: int | None = None,
        task: Task = "sequence-classification",
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
        self.task = task
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
                "it is not a text model graph"
            )
        self._int32 = {i.name for i in self.session.get_inputs() if i.type == "tensor(int32)"}
        # A graph with a token_type_ids input but a model without segment embeddings gets zeros.
        self._types = "token_type_ids" in self.input_names and (uses_token_types(config) or not config)
        out = self.session.get_outputs()[0]
        dim = out.shape[-1] if len(out.shape) > 1 else 1
        fallback = "num_labels" if task == "sequence-classification" else "hidden_size"
        self.num_labels = int(dim) if isinstance(dim, int) else int(config.get(fallback, 0) or 1)
        self.output_name = out.name

    @classmethod
    def load(cls, files: ModelFiles, *, task: Task, threads: int | None = None, **options: Any) -> OnnxBackend:
        """Return the backend for ``files``: a built-in's prepared graph, else the folder's ``model.onnx``.

        ``options`` may hold ``instances``; others are for other backends and ignored.
        """
        builtin = lookup(files.builtin) if files.builtin else None
        if builtin is not None:
            # A cross-encoder runs its dynamic int8 graph one pair per call; a bi-encoder runs the
            # fused fp32 graph, whose vectors do not depend on batch-mates at any batch size.
            graph = builtin.optimized_onnx("int8" if task == "sequence-classification" else "fp32")
        elif files.onnx_file is not None:
            graph = files.onnx_file
        else:
            raise ModelError(f"model {files.name!r} has no ONNX graph in {files.folder}; use backend='torch'")
        return cls(graph, files.config, threads=threads, instances=options.get("instances"), task=task)

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Return the graph's first output, float32, first axis = batch."""
        feed = graph_feed(inputs, self.input_names, use_types=self._types, where=self.model_file)
        for name in self._int32 & feed.keys():
            feed[name] = feed[name].astype(np.int32)
        session = self._pool.get()
        try:
            (out,) = session.run([self.output_name], feed)
        finally:
            self._pool.put(session)
        n = inputs["input_ids"].shape[0]
        result = np.asarray(out, dtype=np.float32)
        return result.reshape(n, -1) if self.task == "sequence-classification" else result


def _has_dynamic_quantization(onnx_file: Path) -> bool:
    """Return whether the graph quantizes activations at run time (``DynamicQuantizeLinear``)."""
    try:
        # op types are stored as plain strings in the protobuf: no need to parse the graph
        return b"DynamicQuantizeLinear" in Path(onnx_file).read_bytes()
    except OSError:
        return False
