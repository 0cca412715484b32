"""Progress bars for index writes: documents counted and documents per second, on stderr.

Off unless asked for (library calls default to ``progress=False``; the CLI turns them on).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

from crossrank._progress import rate_column
from crossrank.errors import InputError
from crossrank.retrieve.corpus import corpus_file

__all__ = ["corpus_size", "progress_bar"]


def corpus_size(corpus: str | os.PathLike[str] | Iterable[Any]) -> int | None:
    """Return how many records ``corpus`` holds, for a progress bar's total (``None``: not knowable cheaply).

    A file counts its lines (one pass over the bytes; blank lines count too, so the bar's total
    is corrected when the write ends); a sized collection its length; a generator is not read.
    """
    if isinstance(corpus, (str, os.PathLike)):
        try:
            path = corpus_file(corpus)
            lines, last = 0, b"\n"
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    lines += block.count(b"\n")
                    last = block[-1:]
        except (InputError, OSError):
            return None  # the reader itself reports a missing or unreadable corpus
        return lines + (last != b"\n")
    if isinstance(corpus, Sized) and not isinstance(corpus, Mapping):
        return len(corpus)
    return None


@contextlib.contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Any]:
    """Yield a rich Progress showing count and documents per second, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        rate_column("docs"),
        TimeElapsedColumn(),
        transient=False,
        console=Console(stderr=True),  # stdout carries results (the CLI prints the manifest there)
    ) as p:
        yield p
