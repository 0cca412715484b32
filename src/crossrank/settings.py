"""Search settings chosen from judged queries: whether to rerank, how deep, and the blend weight.

``crossrank tune`` writes them (:mod:`crossrank.evaluate.tune`); ``crossrank search``, ``crossrank
serve`` and :class:`crossrank.pipeline.Pipeline` load them with ``--settings`` / ``settings=``.
The file is JSON with the evidence the choice rests on beside it, so a reader can see why::

    {"format": "crossrank-settings/1", "rerank": true, "depth": 50, "rerank_weight": 0.7,
     "blend": "probability", "model": "default", "evidence": {...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import ConfigError

__all__ = ["FORMAT", "SearchSettings", "load_settings"]

FORMAT = "crossrank-settings/1"
_BLENDS = ("probability", "minmax")


@dataclass(frozen=True)
class SearchSettings:
    """How a two-stage search runs.

    Attributes:
        rerank: whether the cross-encoder runs at all (False: the first stage alone).
        depth: first-stage candidates the cross-encoder reranks.
        rerank_weight: the cross-encoder's share of the final score (1.0: its order alone).
        blend: how its score enters a blend: ``"probability"`` or ``"minmax"``.
        model: the reranker the settings were chosen for ("" when not recorded).
        evidence: what the choice rests on (queries judged, estimates, intervals); free-form.
    """

    rerank: bool = True
    depth: int = 100
    rerank_weight: float = 1.0
    blend: str = "probability"
    model: str = ""
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1:
            raise ConfigError(f"settings: depth must be an integer >= 1 (got {self.depth!r})")
        if not isinstance(self.rerank_weight, int | float) or not 0.0 <= float(self.rerank_weight) <= 1.0:
            raise ConfigError(f"settings: rerank_weight must be within [0, 1] (got {self.rerank_weight!r})")
        if self.blend not in _BLENDS:
            raise ConfigError(f"settings: blend must be one of {_BLENDS} (got {self.blend!r})")
        if not isinstance(self.rerank, bool):
            raise ConfigError(f"settings: rerank must be true or false (got {self.rerank!r})")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as the JSON object the file holds."""
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the settings file (atomically: a reader never sees half a file) and return its path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, out)
        return out

    def describe(self) -> str:
        """One line: what a search with these settings does."""
        if not self.rerank:
            return "first stage only (no reranking)"
        blend = "" if self.rerank_weight >= 1.0 else f", blended at weight {self.rerank_weight:g} ({self.blend})"
        return f"rerank the top {self.depth}{blend}"


def load_settings(path: str | os.PathLike[str]) -> SearchSettings:
    """Read a settings file written by ``crossrank tune`` (or by hand).

    Raises:
        ConfigError: the file is missing, not JSON, of another format, or holds a bad value.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"settings file {p} does not exist; write one with `crossrank tune`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"settings file {p} is not readable JSON ({e}); write one with `crossrank tune`") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(
            f"settings file {p} is not a {FORMAT} file (format: {got!r}); write one with `crossrank tune`"
        )
    known = {"rerank", "depth", "rerank_weight", "blend", "model", "evidence"}
    unknown = sorted(set(raw) - known - {"format"})
    if unknown:
        raise ConfigError(f"settings file {p} has unknown key(s) {unknown}; the keys are {sorted(known)}")
    try:
        return SearchSettings(**{k: v for k, v in raw.items() if k in known})
    except ConfigError as e:
        raise ConfigError(f"settings file {p}: {str(e).removeprefix('settings: ')}") from None
