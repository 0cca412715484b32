"""Lazy imports of optional dependencies, with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from crossrank.errors import MissingDependencyError

# module name -> (pip distribution, crossrank extra)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch==2.13.0", "torch"),
    "transformers": ("transformers", "torch"),
    "safetensors": ("safetensors", "torch"),
    "onnx": ("onnx", ""),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "ir_measures": ("ir-measures", "eval"),
    "matplotlib": ("matplotlib", "eval"),
    "scipy": ("scipy", "eval"),
    "sklearn": ("scikit-learn", "eval"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "prometheus_client": ("prometheus-client", "serve"),
    "ray": ("ray[data,serve]", "ray"),
    "pyarrow": ("pyarrow", "ray"),
    "psycopg": ("psycopg[binary]", "postgres"),
    "psycopg_pool": ("psycopg-pool", "postgres"),
}


def require(module: str, *, feature: str) -> ModuleType:
    """Return the imported ``module``, or raise a :class:`MissingDependencyError` saying how to get it.

    Args:
        module: importable module name, e.g. ``"torch"``.
        feature: what needs it, named in the message, e.g. ``"backend 'torch'"``.

    Raises:
        MissingDependencyError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{feature} needs {module}, which is not installed: {install_hint(module)}"
        ) from err


def install_hint(module: str) -> str:
    """Return the command that installs ``module``: ``pip install "crossrank[extra]"`` or ``pip install dist``."""
    dist, extra = _EXTRAS.get(module.split(".")[0], (module, ""))
    return f'pip install "crossrank[{extra}]"' if extra else f"pip install {dist}"
