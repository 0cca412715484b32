"""crossrank's cache folder: derived files (optimized graphs) that are expensive to rebuild."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Return the cache folder.

    It is ``$CROSSRANK_CACHE`` if set, else ``$XDG_CACHE_HOME/crossrank``, else ``~/.cache/crossrank``.
    """
    env = os.environ.get("CROSSRANK_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crossrank"
