"""The end of a training run: export the trained folder to an optimised ONNX + OpenVINO folder.

int8 is kept only when it keeps quality: the dev measure of the int8 export may fall at most
``tolerance`` below the fp32 model's, else the export falls back to bf16 (fp32 weights).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from crossrank.errors import ConfigError
from crossrank.train.trainer import DevSet, dev_measure, dev_pairs

__all__ = ["dev_value", "export_trained"]

log = logging.getLogger(__name__)


def dev_value(model: str | os.PathLike[str], dev: DevSet, *, backend: str = "auto") -> float:
    """Return ``dev.measure`` of ``model`` (any crossrank model source) reranking the dev candidates."""
    from crossrank.rerank.cross_encoder import CrossEncoder

    ce = CrossEncoder(model, backend=backend, calibration=None)
    keys = dev_pairs(dev)
    scores = ce.score([(dev.queries[q], dev.documents[d]) for q, d in keys], activation="none")
    return dev_measure(dev, keys, scores.tolist())


def export_trained(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    quantize: str = "int8",
    dev: DevSet | None = None,
    tolerance: float = 0.005,
) -> dict[str, Any]:
    """Export a trained Hugging Face folder for serving; return what was exported and measured.

    With ``quantize="int8"`` and a dev set, the int8 export is measured against the fp32 folder
    (torch) and replaced by a bf16 export when it loses more than ``tolerance``.

    Raises:
        ConfigError: ``quantize`` is not int8, bf16 or none.
    """
    from crossrank.models.export import export_optimized

    if quantize not in ("int8", "bf16", "none"):
        raise ConfigError(f"export must be int8, bf16, none or skip (got {quantize!r})")
    out = Path(output)
    info: dict[str, Any] = {"folder": str(out), "quantize": quantize}
    export_optimized(Path(folder), out, quantize=quantize, overwrite=True)
    if dev is not None:
        fp32 = dev_value(folder, dev, backend="torch")
        exported = dev_value(out, dev)
        info.update({"dev_measure": dev.measure, "dev_fp32": fp32, f"dev_{quantize}": exported})
        if quantize == "int8" and exported < fp32 - tolerance:
            log.warning(
                "int8 loses %.4f %s on the dev set (more than %.4f): exporting bf16 instead",
                fp32 - exported,
                dev.measure,
                tolerance,
            )
            export_optimized(Path(folder), out, quantize="bf16", overwrite=True)
            info["quantize"] = "bf16"
            info["dev_bf16"] = dev_value(out, dev)
    return info
