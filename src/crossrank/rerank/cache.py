"""A score cache for repeated (query, document) pairs: an in-memory LRU, optionally backed by SQLite.

Keys are a hash of the model's identity (name, backend, graph, max_length) and the two texts, so
two models never share entries. The cache stores raw logits; the activation is applied after.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["ScoreCache"]


class ScoreCache:
    """Raw logits of pairs already scored, keyed by model and a hash of the texts.

    Args:
        model_key: identifies the model and its settings; part of every key.
        size: most entries kept in memory (least recently used go first); 0 keeps none in memory.
        folder: if given, entries are also written to ``folder/scores.sqlite`` and read back later.
    """

    def __init__(self, model_key: str, *, size: int, folder: str | Path | None = None) -> None:
        self._prefix = hashlib.sha256(model_key.encode()).digest()[:8]
        self.size = size
        self._mem: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if folder is not None:
            path = Path(folder)
            path.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path / "scores.sqlite"), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, logits BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def keys(self, queries: Sequence[str], docs: Sequence[str]) -> list[bytes]:
        """Return the cache key of each pair."""
        p = self._prefix
        return [
            hashlib.blake2b(q.encode() + b"\x00" + d.encode(), digest_size=16, key=p).digest()
            for q, d in zip(queries, docs, strict=True)
        ]

    def get(self, keys: Sequence[bytes], num_labels: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Return ``(logits, found)``: cached logits (zeros where missing) and which keys were found."""
        out = np.zeros((len(keys), num_labels), dtype=np.float32)
        found = np.zeros(len(keys), dtype=np.bool_)
        missing: list[int] = []
        with self._lock:
            for i, k in enumerate(keys):
                v = self._mem.get(k)
                if v is None:
                    missing.append(i)
                    continue
                self._mem.move_to_end(k)
                out[i] = np.frombuffer(v, dtype=np.float32)
                found[i] = True
            if self._db is not None and missing:
                for start in range(0, len(missing), 500):
                    chunk = missing[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = dict(
                        self._db.execute(
                            f"SELECT key, logits FROM scores WHERE key IN ({marks})", [keys[i] for i in chunk]
                        )
                    )
                    for i in chunk:
                        v = rows.get(keys[i])
                        if v is not None:
                            out[i] = np.frombuffer(v, dtype=np.float32)
                            found[i] = True
                            self._remember(keys[i], v)
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        return out, found

    def put(self, keys: Sequence[bytes], logits: npt.NDArray[np.float32]) -> None:
        """Store the logits of ``keys`` (one row each)."""
        values = [row.astype(np.float32).tobytes() for row in logits]
        with self._lock:
            for k, v in zip(keys, values, strict=True):
                self._remember(k, v)
            if self._db is not None:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO scores VALUES (?, ?)", list(zip(keys, values, strict=True))
                    )

    def _remember(self, key: bytes, value: bytes) -> None:
        if self.size <= 0:
            return
        self._mem[key] = value
        self._mem.move_to_end(key)
        while len(self._mem) > self.size:
            self._mem.popitem(last=False)

    def __len__(self) -> int:
        return len(self._mem)
