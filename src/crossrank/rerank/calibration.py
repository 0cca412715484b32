"""The calibration scoring applies: a map from a one-logit model's raw logit to a probability.

Fitting one is evaluation's job (:mod:`crossrank.evaluate.calibrate`); applying, saving, loading
and finding a model's saved calibration belong to scoring, so :class:`~crossrank.CrossEncoder`
imports nothing from the layers above it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from crossrank.errors import ConfigError
from crossrank.models.cache import cache_dir
from crossrank.models.source import ModelFiles

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "Method",
    "default_calibration_path",
    "model_fingerprint",
    "remove_default_calibration",
]

#: how a calibration maps logits to probabilities
Method = Literal["platt", "isotonic"]
_METHODS: tuple[str, ...] = get_args(Method)
#: the file name a calibration is saved under, beside the model or in the cache
CALIBRATION_FILE = "crossrank-calibration.json"
_FORMAT = "crossrank-calibration"
_VERSION = 1
# bytes read from the start and the end of each weight file for the fingerprint
_FINGERPRINT_BYTES = 1 << 20


# ------------------------------------------------------------------ the mapping


@dataclass(frozen=True, slots=True)
class Calibration:
    """A non-decreasing map from a one-logit model's raw logit to a probability of relevance.

    Attributes:
        method: ``"platt"``: ``p = sigmoid(a * logit + b)``; ``"isotonic"``: linear
            interpolation through the breakpoints ``(x, y)``, constant beyond the ends.
        a: Platt slope, > 0 (ignored by isotonic).
        b: Platt intercept (ignored by isotonic).
        x: isotonic breakpoints, raw logits, strictly increasing (empty for Platt).
        y: isotonic probabilities at ``x``, non-decreasing, in [0, 1] (empty for Platt).
        model: the model name it was fitted for (informational).
        fingerprint: identifies the model's weights (see :func:`model_fingerprint`); a
            calibration whose fingerprint differs from the model's was fitted for another model.
        fitted_on: provenance: data, run, depth, rel, pairs, positives, backend.

    Raises:
        ConfigError: a parameter is not allowed (non-positive slope, unsorted breakpoints...).
    """

    method: Method
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    model: str = ""
    fingerprint: str = ""
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"calibration method must be one of {_METHODS} (got {self.method!r})")
        if self.method == "platt":
            if not (math.isfinite(self.a) and math.isfinite(self.b)):
                raise ConfigError(f"Platt parameters must be finite (got a={self.a}, b={self.b})")
            if self.a <= 0:
                raise ConfigError(
                    f"Platt slope a must be > 0 so the map keeps the ranking (got a={self.a}); refit the calibration"
                )
            return
        xs = np.asarray(self.x, dtype=np.float64)
        ys = np.asarray(self.y, dtype=np.float64)
        if xs.ndim != 1 or xs.size == 0 or xs.shape != ys.shape:
            raise ConfigError(
                f"isotonic breakpoints x and y must be two non-empty lists of equal length "
                f"(got {xs.size} x and {ys.size} y)"
            )
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise ConfigError("isotonic breakpoints must be finite numbers (got NaN or infinity)")
        if (np.diff(xs) <= 0).any():
            raise ConfigError("isotonic breakpoints x must be strictly increasing; refit the calibration")
        if (np.diff(ys) < 0).any():
            raise ConfigError("isotonic probabilities y must be non-decreasing so the map keeps the ranking")
        if ys.min() < 0 or ys.max() > 1:
            raise ConfigError(f"isotonic probabilities y must lie in [0, 1] (got {ys.min():.4g} to {ys.max():.4g})")

    def apply(self, logits: ArrayLike) -> npt.NDArray[np.float32]:
        """Return the probability of relevance of each raw logit, float32, same shape as ``logits``."""
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "platt":
            p = 0.5 * (1.0 + np.tanh(0.5 * (self.a * z + self.b)))  # overflow-free sigmoid
        else:
            p = np.interp(z, self.x, self.y)  # clips to y[0] and y[-1] outside [x[0], x[-1]]
        return np.asarray(p, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the calibration as a JSON-ready dict (round-trips through :meth:`from_dict`)."""
        params: dict[str, Any] = (
            {"a": self.a, "b": self.b} if self.method == "platt" else {"x": list(self.x), "y": list(self.y)}
        )
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method,
            "parameters": params,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Return the calibration described by ``data`` (as written by :meth:`to_dict`).

        Raises:
            ConfigError: a field is missing, of the wrong type, or not allowed.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a calibration must be a JSON object (got {type(data).__name__})")
        if data.get("format") != _FORMAT:
            raise ConfigError(f"'format' must be {_FORMAT!r} (got {data.get('format')!r})")
        if data.get("version") != _VERSION:
            raise ConfigError(f"'version' must be {_VERSION} (got {data.get('version')!r}); this crossrank reads v1")
        method = data.get("method")
        if method not in _METHODS:
            raise ConfigError(f"'method' must be one of {_METHODS} (got {method!r})")
        params = data.get("parameters")
        if not isinstance(params, Mapping):
            raise ConfigError(f"'parameters' must be an object (got {type(params).__name__})")
        model, fingerprint, fitted_on = data.get("model", ""), data.get("fingerprint", ""), data.get("fitted_on", {})
        if not isinstance(model, str) or not isinstance(fingerprint, str) or not isinstance(fitted_on, Mapping):
            raise ConfigError("'model' and 'fingerprint' must be strings and 'fitted_on' an object")
        if method == "platt":
            a, b = params.get("a"), params.get("b")
            if not (_is_number(a) and _is_number(b)):
                raise ConfigError(f"Platt 'parameters' need numbers 'a' and 'b' (got a={a!r}, b={b!r})")
            return cls("platt", a=float(a), b=float(b), model=model, fingerprint=fingerprint, fitted_on=fitted_on)
        xs, ys = params.get("x"), params.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ConfigError(
                f"isotonic 'parameters' need lists 'x' and 'y' (got {type(xs).__name__}, {type(ys).__name__})"
            )
        if not all(_is_number(v) for v in xs + ys):
            raise ConfigError("isotonic 'parameters' x and y must hold numbers only")
        return cls(
            "isotonic",
            x=tuple(float(v) for v in xs),
            y=tuple(float(v) for v in ys),
            model=model,
            fingerprint=fingerprint,
            fitted_on=fitted_on,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibration as JSON to ``path`` (folders created, replaced atomically); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Return the calibration saved at ``path``.

        Raises:
            ConfigError: the file is missing, not JSON, or not a valid calibration; the message
                names the file and how to fix it.
        """
        p = Path(path)
        fix = f"re-create it with `crossrank calibrate --model MODEL --data DIR --run RUN --output {p}`"
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"no calibration file at {p}; {fix}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read calibration file {p} ({err}); check its permissions or {fix}") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"calibration file {p} is not valid JSON ({err}); delete it or {fix}") from err
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"calibration file {p} is not a valid calibration: {err}; delete it or {fix}") from err


# ------------------------------------------------------------------ where it lives


def default_calibration_path(files: ModelFiles) -> Path:
    """Return where the calibration of a model is saved and looked for.

    A local model folder (or the folder of an ``.onnx`` file) holds it beside the model, as
    ``crossrank-calibration.json``. Built-ins and hub models live in folders crossrank does not
    own, so theirs goes in the cache (:func:`crossrank.models.cache.cache_dir`):
    ``calibration/<built-in name>/`` or ``calibration/hub/<org>--<name>/``.
    """
    if files.builtin:
        return cache_dir() / "calibration" / files.builtin / CALIBRATION_FILE
    if Path(files.name).expanduser().exists():
        return files.folder / CALIBRATION_FILE
    return cache_dir() / "calibration" / "hub" / files.name.replace("/", "--") / CALIBRATION_FILE


def remove_default_calibration(files: ModelFiles) -> Path | None:
    """Delete the calibration saved at the model's default place; return its path, or ``None`` if there was none.

    Afterwards the model scores with its own activation again (``CrossEncoder(model)`` finds no
    calibration). A calibration saved elsewhere with ``--output`` is not touched.

    Raises:
        OSError: the file exists but cannot be deleted (permissions).
    """
    path = default_calibration_path(files)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def model_fingerprint(files: ModelFiles) -> str:
    """Return a short id of a model's weights, to tell whether a calibration was fitted for them.

    Built-ins use their pinned sha256. Other models hash each graph or weight file's name, size,
    and first and last MiB: cheap, and it changes when a model is retrained and saved over.
    """
    if files.builtin:
        from crossrank.models.registry import lookup

        builtin = lookup(files.builtin)
        if builtin is not None and "model.onnx" in builtin.files:
            return "sha256:" + builtin.files["model.onnx"][:16]
    names = (
        "model.onnx",
        "onnx/model.onnx",
        "model.xml",
        "model.bin",
        "openvino_model.xml",
        "openvino_model.bin",
        "model.safetensors",
        "pytorch_model.bin",
    )
    paths = sorted({p for p in [files.onnx_file, *(files.folder / n for n in names)] if p is not None and p.is_file()})
    if not paths:
        return ""
    h = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        h.update(f"{path.name}:{size}:".encode())
        with path.open("rb") as fh:
            h.update(fh.read(_FINGERPRINT_BYTES))
            if size > _FINGERPRINT_BYTES:
                fh.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
                h.update(fh.read())
    return "head-tail-sha256:" + h.hexdigest()[:16]


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
