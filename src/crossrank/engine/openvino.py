"""The OpenVINO backend (the default engine for prepared int8 graphs on CPUs with int8 dot products)."""

from __future__ import annotations

import os
import queue
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.engine.base import Task, default_threads, graph_feed
from crossrank.errors import ModelError
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles
from crossrank.models.tokenizer import uses_token_types

__all__ = ["OpenVinoBackend"]


def _affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OpenVinoBackend:
    """Run an OpenVINO IR or ONNX graph with OpenVINO on the CPU, several infer requests in flight.

    Args:
        model_file: ``model.xml`` (OpenVINO IR) or an ``.onnx`` graph.
        config: the model's Hugging Face config (decides whether segment ids are fed).
        threads: inference threads; defaults to the cores this process may use.
        precision: ``"auto"`` runs non-quantized parts in bf16 where the CPU has native bf16, else
            fp32; ``"fp32"`` and ``"bf16"`` force it.
        task: ``"sequence-classification"`` returns ``(batch, num_labels)`` logits;
            ``"feature-extraction"`` returns the graph's first output as it is.
    """

    def __init__(
        self,
        model_file: Path,
        config: Mapping[str, Any],
        *,
        threads: int | None = None,
        precision: str = "auto",
        task: Task = "sequence-classification",
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
        self.task = task
        self.input_names = {i.get_any_name() for i in compiled.inputs}
        if "input_ids" not in self.input_names:
            raise ModelError(f"{model_file} has no 'input_ids' input (inputs: {sorted(self.input_names)})")
        self._types = "token_type_ids" in self.input_names and (uses_token_types(config) or not config)
        out_shape = compiled.outputs[0].get_partial_shape()
        last = out_shape[out_shape.rank.get_length() - 1]
        fallback = "num_labels" if task == "sequence-classification" else "hidden_size"
        self.num_labels = last.get_length() if last.is_static else int(config.get(fallback, 1) or 1)
        n_req = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.parallelism = max(1, n_req)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.parallelism):
            self._pool.put(compiled.create_infer_request())
        self._compiled = compiled
        # The first inference ever, started on several threads at once, can hang inside the
        # bindings' one-time numpy setup; one tiny inference here, on this thread, does that setup.
        one = np.ones((1, 2), dtype=np.int64)
        self.run({"input_ids": one, "attention_mask": one, "token_type_ids": np.zeros((1, 2), dtype=np.int64)})

    @classmethod
    def load(cls, files: ModelFiles, *, task: Task, threads: int | None = None, **options: Any) -> OpenVinoBackend:
        """Return the backend for ``files``: a built-in's static int8 IR, else the folder's IR or ONNX graph.

        ``options`` may hold ``precision``; others are for other backends and ignored.
        """
        builtin = lookup(files.builtin) if files.builtin else None
        graph = builtin.openvino_int8() / "model.xml" if builtin else (files.openvino_file or files.onnx_file)
        if graph is None:
            raise ModelError(
                f"model {files.name!r} has no ONNX graph or OpenVINO IR in {files.folder}; export one with "
                "`crossrank models export`"
            )
        return cls(graph, files.config, threads=threads, precision=options.get("precision", "auto"), task=task)

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Return the graph's first output, float32, first axis = batch."""
        feed = graph_feed(inputs, self.input_names, use_types=self._types, where=self.model_file)
        request = self._pool.get()
        try:
            result = request.infer(feed)
            out = np.array(result[0], dtype=np.float32)  # copy: the request reuses its buffer
        finally:
            self._pool.put(request)
        n = inputs["input_ids"].shape[0]
        return out.reshape(n, -1) if self.task == "sequence-classification" else out
