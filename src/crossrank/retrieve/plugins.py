"""Loading a first stage named on the command line: ``package.module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from crossrank.errors import ConfigError
from crossrank.retrieve.protocols import FirstStage

__all__ = ["load_first_stage"]


def load_first_stage(spec: str, *, base: Path | None = None) -> FirstStage:
    """Return the first stage ``spec`` names: ``module:attr`` (importable) or ``file.py:attr``.

    ``attr`` is a first stage, or a class or function that makes one when called without
    arguments. A file path is relative to ``base`` (default: the working directory). For
    ``crossrank search`` and ``eval`` the first stage must also be a document store (``get(ids)``).

    Raises:
        ConfigError: ``spec`` is malformed, cannot be imported, or does not name a first stage.

    Example:
        >>> load_first_stage("my_engine:stage")  # doctest: +SKIP
    """
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ConfigError(f"a first stage is named as module:attr or path/to/file.py:attr (got {spec!r})")
    try:
        if where.endswith(".py") or "/" in where or "\\" in where:
            path = Path(where) if base is None or Path(where).is_absolute() else base / where
            module_name = f"crossrank_first_stage_{abs(hash(str(path.resolve())))}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            if loader is None or loader.loader is None or not path.is_file():
                raise ConfigError(f"first stage file {path} does not exist or is not a Python file")
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as err:  # the user's module: any error it raises on import
        raise ConfigError(f"cannot import the first stage's module {where!r} ({type(err).__name__}: {err})") from err
    if not hasattr(module, attr):
        raise ConfigError(f"module {where!r} has no attribute {attr!r} (the first stage of {spec!r})")
    obj = getattr(module, attr)
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, FirstStage)):
        obj = obj()
    if not isinstance(obj, FirstStage):
        raise ConfigError(
            f"{spec!r} is a {type(obj).__name__}, not a first stage (an object with retrieve(queries, k))"
        )
    return obj
