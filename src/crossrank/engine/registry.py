"""Backends by name, imported lazily, and the one loader both stages use.

A backend is a class with ``run(inputs) -> np.ndarray`` (see :class:`~crossrank.engine.base.Backend`)
and a classmethod ``load(files, *, task, threads=None, **options)`` that builds it for a model's
files. It is registered as ``"module:Class"``, with the modules it needs, so that listing what is
installed imports nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crossrank._deps import install_hint
from crossrank.engine.base import TASKS, Backend, Task
from crossrank.engine.choice import choose_backend
from crossrank.errors import ConfigError
from crossrank.models.source import ModelFiles

__all__ = ["available_backends", "check_backend_name", "load_backend", "register_backend", "unregister_backend"]


@dataclass(frozen=True, slots=True)
class _Entry:
    target: str  # "module:Class"
    requires: tuple[str, ...]  # importable modules the backend needs


_BACKENDS: dict[str, _Entry] = {
    "onnx": _Entry("crossrank.engine.onnx:OnnxBackend", ("onnxruntime",)),
    "openvino": _Entry("crossrank.engine.openvino:OpenVinoBackend", ("openvino",)),
    "torch": _Entry("crossrank.engine.torch:TorchBackend", ("torch", "transformers")),
}


def register_backend(name: str, target: str, *, requires: tuple[str, ...] = ()) -> None:
    """Make ``name`` a backend: ``target`` is ``"module:Class"``, imported on first use.

    Args:
        name: what ``backend=`` says, e.g. ``"tensorrt"``.
        target: the class, e.g. ``"my_package.trt:TensorRtBackend"``; it needs ``run`` and a
            classmethod ``load(files, *, task, threads=None, **options)``.
        requires: modules it imports, so :func:`available_backends` can tell whether it is installed.

    Raises:
        ConfigError: ``name`` is ``"auto"`` or already taken, or ``target`` is not ``"module:Class"``.
    """
    module, _, cls = target.partition(":")
    if not module or not cls:
        raise ConfigError(f"backend target must be 'module:Class' (got {target!r})")
    if name == "auto" or name in _BACKENDS:
        raise ConfigError(f"backend name {name!r} is taken; taken: auto, {', '.join(_BACKENDS)}")
    _BACKENDS[name] = _Entry(target, tuple(requires))


def unregister_backend(name: str) -> None:
    """Forget the backend ``name`` (one registered with :func:`register_backend`)."""
    _BACKENDS.pop(name, None)


def available_backends() -> dict[str, bool]:
    """Return every backend name and whether what it needs is installed, without importing it."""
    return {name: _missing(entry) is None for name, entry in _BACKENDS.items()}


def check_backend_name(backend: str) -> None:
    """Raise unless ``backend`` is ``"auto"`` or a registered backend.

    Raises:
        ConfigError: the name is unknown; the message lists each backend and whether it is installed.
    """
    if backend == "auto" or (isinstance(backend, str) and backend in _BACKENDS):
        return
    listed = []
    for name, entry in _BACKENDS.items():
        missing = _missing(entry)
        listed.append(f"{name} (installed)" if missing is None else f"{name} (not installed: {install_hint(missing)})")
    raise ConfigError(f"unknown backend {backend!r}; use 'auto' or one of: {', '.join(listed)}")


def load_backend(
    files: ModelFiles,
    *,
    task: Task,
    backend: str = "auto",
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Backend:
    """Return a loaded backend that runs the model in ``files`` for ``task``.

    Args:
        files: the model's files (:func:`~crossrank.models.source.resolve`).
        task: ``"sequence-classification"`` (a cross-encoder's logits) or ``"feature-extraction"``
            (a bi-encoder's hidden states).
        backend: a registered name, or ``"auto"``: :func:`~crossrank.engine.choice.choose_backend`.
        threads: inference threads; ``None`` uses the cores this process may use.
        options: backend settings (``instances`` for ONNX Runtime, ``precision`` for OpenVINO); a
            backend ignores those it does not take, so one config serves every backend.

    Raises:
        ConfigError: the backend or task is unknown.
        MissingDependencyError: the backend is not installed.
        ModelError: the backend cannot run these files, or a file is broken.

    Example:
        >>> from crossrank.models.source import resolve
        >>> backend = load_backend(resolve("default"), task="sequence-classification", backend="onnx")
        >>> backend.num_labels
        1
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)} (got {task!r})")
    check_backend_name(backend)
    name = choose_backend(files, backend)[0]
    entry = _BACKENDS[name]
    missing = _missing(entry)
    if missing is not None:
        from crossrank._deps import require

        require(missing, feature=f"backend {name!r}")  # raises with the install hint
    module, _, cls_name = entry.target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    loaded: Backend = cls.load(files, task=task, threads=threads, **dict(options or {}))
    return loaded


def _missing(entry: _Entry) -> str | None:
    """Return the first module the backend needs that is not installed, or ``None``."""
    for module in entry.requires:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):
            return module
    return None
