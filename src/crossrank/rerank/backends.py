"""The backends now live in :mod:`crossrank.engine`; this module re-exports them.

Their ``run`` takes named tensors: ``backend.run({"input_ids": ..., "attention_mask": ...,
"token_type_ids": ...})``.
"""

from __future__ import annotations

from crossrank.engine.base import Backend, default_threads
from crossrank.engine.onnx import MAX_AUTO_INSTANCES, OnnxBackend
from crossrank.engine.openvino import OpenVinoBackend
from crossrank.engine.torch import TorchBackend
from crossrank.models.tokenizer import uses_token_types

__all__ = [
    "MAX_AUTO_INSTANCES",
    "Backend",
    "OnnxBackend",
    "OpenVinoBackend",
    "TorchBackend",
    "default_threads",
    "uses_token_types",
]
