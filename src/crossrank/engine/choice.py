"""The one rule that picks a backend for a model's files, for the cross-encoder and the bi-encoder."""

from __future__ import annotations

from crossrank.errors import ModelError
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles, has_openvino

__all__ = ["choose_backend"]


def choose_backend(files: ModelFiles, backend: str = "auto") -> tuple[str, str]:
    """Return the backend to use for ``files`` and, in a few words, why.

    ``"auto"`` picks by the CPU's instruction set. With int8 dot-product instructions (AVX-512
    VNNI, AVX-VNNI, AMX) a static int8 OpenVINO graph is the fastest engine measured: auto takes
    it for a built-in whose graph is prepared (``crossrank models prepare``) and for a folder
    with an OpenVINO IR. Without them (AVX2 only) ONNX Runtime's dynamic int8 measured about
    twice OpenVINO's static int8, so auto takes ONNX Runtime whenever there is a graph. A
    built-in's ONNX Runtime graph builds in seconds, so the first result never waits on the
    OpenVINO calibration. Torch is the last resort (Hugging Face weights only). Any other name
    is returned as asked for; its backend's ``load`` checks the files.

    Raises:
        ModelError: the asked backend cannot run these files.
    """
    if backend == "auto":
        return _auto_backend(files)
    if backend == "openvino":
        if files.openvino_file is None and files.onnx_file is None:
            raise ModelError(
                f"model {files.name!r} has no ONNX graph or OpenVINO IR in {files.folder}; export one with "
                "`crossrank models export`"
            )
        return "openvino", "asked for"
    if backend == "onnx" and files.onnx_file is None:
        raise ModelError(
            f"model {files.name!r} has no ONNX graph (no model.onnx in {files.folder}); use backend='torch' "
            "or export one with `crossrank models export`"
        )
    if backend == "torch" and not files.has_weights:
        raise ModelError(
            f"model {files.name!r} has no Hugging Face weights in {files.folder} (model.safetensors or "
            "pytorch_model.bin); use backend='onnx'"
            + (f", or convert it: crossrank models convert {files.builtin} --output DIR" if files.builtin else "")
        )
    return backend, "asked for"


def _auto_backend(files: ModelFiles) -> tuple[str, str]:
    from crossrank.cpu import cpu_flags, int8_dot_product

    isa = "+".join(sorted(cpu_flags())) or "unknown instruction set"
    vnni = int8_dot_product()
    if vnni and has_openvino(runtime_only=True):
        if files.builtin:
            builtin = lookup(files.builtin)
            if builtin is not None and builtin.openvino_ready():
                return "openvino", f"the CPU has int8 dot products ({isa}) and the OpenVINO int8 graph is prepared"
        elif files.openvino_file is not None:
            return "openvino", f"the CPU has int8 dot products ({isa}) and the folder has an OpenVINO IR"
    if files.onnx_file is not None:
        if vnni and files.builtin:
            why = (
                f"the CPU has int8 dot products ({isa}) but the faster OpenVINO int8 graph is not prepared: "
                f"`crossrank models prepare {files.builtin}`"
                + ("" if has_openvino() else ' (needs pip install "crossrank[openvino]")')
            )
            return "onnx", why
        return "onnx", f"ONNX Runtime is the fastest engine without int8 dot products ({isa})"
    if files.openvino_file is not None and has_openvino(runtime_only=True):
        return "openvino", "the folder has only an OpenVINO IR"
    if files.openvino_file is not None:
        raise ModelError(
            f"model {files.name!r} has only an OpenVINO IR in {files.folder}, and OpenVINO is not installed: "
            'pip install "crossrank[openvino]"'
        )
    return choose_backend(files, "torch")[0], "the folder has Hugging Face weights only"
