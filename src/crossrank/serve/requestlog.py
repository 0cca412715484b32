"""A sampled request log: what was asked, both orders, the scores, timings and signals, as JSONL.

Off unless ``crossrank serve --request-log DIR`` turns it on. A request never waits for the disk:
it hands its record to a bounded queue and returns (``offer`` is ``put_nowait``); one writer thread
appends the records to ``requests.jsonl`` and rotates it past ``max_bytes`` (``requests.1.jsonl``
is the newest old file, up to ``keep`` of them). When the queue is full the record is dropped and
counted, never the request. The folder is checked at start-up: not writable, or less free space
than ``min_free_bytes``, and the server refuses to start with a one-line error.

Texts (the query and the documents) are kept in full, hashed (SHA-256, so equal texts can still be
matched) or dropped, as configured; ids, orders, scores, timings and signals are always kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Literal

from crossrank.errors import ConfigError

__all__ = ["TEXT_POLICIES", "RequestLog", "redact"]

log = logging.getLogger("crossrank.serve")

TextPolicy = Literal["full", "hash", "drop"]
TEXT_POLICIES = ("full", "hash", "drop")
FILE = "requests.jsonl"


def redact(text: str, policy: TextPolicy) -> str | None:
    """Return ``text`` as the log keeps it: in full, as ``sha256:<hex>``, or ``None``."""
    if policy == "full":
        return text
    if policy == "hash":
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return None


class RequestLog:
    """Writes a sampled share of requests to rotating JSONL files without slowing any request.

    Args:
        folder: where ``requests.jsonl`` goes (created).
        sample: the share of requests logged, in (0, 1].
        texts: ``"full"``, ``"hash"`` or ``"drop"``: what the log keeps of queries and documents.
        max_bytes: rotate the file past this size.
        keep: rotated files kept.
        queue_size: records waiting for the writer; beyond it they are dropped and counted.
        min_free_bytes: the free space the folder's disk must have at start-up.
        seed: the sampling's seed (``None``: random).

    Raises:
        ConfigError: a bad setting, or the folder cannot be written or its disk is (nearly) full.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        sample: float = 1.0,
        texts: TextPolicy = "full",
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 5,
        queue_size: int = 10_000,
        min_free_bytes: int = 64 * 1024 * 1024,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise ConfigError(f"the request log's sample must be within (0, 1] (got {sample})")
        if texts not in TEXT_POLICIES:
            raise ConfigError(f"the request log keeps texts as one of {TEXT_POLICIES} (got {texts!r})")
        if max_bytes < 1024 or keep < 1 or queue_size < 1:
            raise ConfigError("the request log needs max_bytes >= 1024, keep >= 1 and queue_size >= 1")
        self.folder = Path(folder)
        self.path = self.folder / FILE
        self.sample, self.texts, self.max_bytes, self.keep = sample, texts, max_bytes, keep
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".crossrank-write-test"
            probe.write_text("ok")
            probe.unlink()
            free = shutil.disk_usage(self.folder).free
        except OSError as e:
            raise ConfigError(
                f"cannot write the request log in {self.folder} ({e.strerror or e}); choose a writable --request-log"
            ) from None
        if free < min_free_bytes:
            raise ConfigError(
                f"the disk of {self.folder} has {free // (1024 * 1024)} MB free, under the "
                f"{min_free_bytes // (1024 * 1024)} MB the request log needs; free space or choose another folder"
            )
        self._random = random.Random(seed)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self.written = 0
        self.dropped = 0  # queue full
        self.failed = 0  # the disk refused after start-up
        self._thread = threading.Thread(target=self._run, name="crossrank-request-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the request side

    def wants(self) -> bool:
        """Whether this request is in the sample (cheap; call before building a record)."""
        return self.sample >= 1.0 or self._random.random() < self.sample

    def offer(self, record: dict[str, Any]) -> bool:
        """Hand a record to the writer without waiting; return False when it was dropped (queue full)."""
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def text(self, value: str) -> str | None:
        """A query's or document's text as this log keeps it."""
        return redact(value, self.texts)

    # ------------------------------------------------------------------ the writer

    def _run(self) -> None:
        out = self.path.open("a", encoding="utf-8")
        try:
            while True:
                record = self._queue.get()
                if record is None:
                    break
                try:
                    out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
                    out.flush()
                    self.written += 1
                    if out.tell() >= self.max_bytes:
                        out.close()
                        self._rotate()
                        out = self.path.open("a", encoding="utf-8")
                except (OSError, ValueError) as e:
                    self.failed += 1
                    if self.failed == 1 or self.failed % 1000 == 0:
                        log.warning("request log: a record was not written (%s); requests are unaffected", e)
        finally:
            out.close()

    def _rotate(self) -> None:
        oldest = self.folder / f"requests.{self.keep}.jsonl"
        oldest.unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            src = self.folder / f"requests.{i}.jsonl"
            if src.exists():
                os.replace(src, self.folder / f"requests.{i + 1}.jsonl")
        os.replace(self.path, self.folder / "requests.1.jsonl")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        old = sorted(self.folder.glob("requests.*.jsonl"), key=lambda p: -int(p.name.split(".")[1]))
        return [*old, *([self.path] if self.path.exists() else [])]
