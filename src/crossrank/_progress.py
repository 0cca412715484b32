"""The progress bars of long work, written once: on stderr (stdout carries results), off unless asked.

Library calls default to ``progress=False``; the command line turns bars on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["counting", "rate_column", "stderr_progress"]


def rate_column(unit: str) -> Any:
    """Return a rich column showing ``unit`` per second (the task's measured speed)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

    return RateColumn()


def stderr_progress(label: str, *, unit: str, extra: Sequence[Any] = (), transient: bool = False) -> Any:
    """Return an unstarted rich ``Progress`` on stderr: label, bar, done/total, ``unit``/s, ``extra``, time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        rate_column(unit),
        *extra,
        TimeRemainingColumn(),
        transient=transient,
        console=Console(stderr=True),
    )


@contextlib.contextmanager
def counting(
    show: bool, label: str, total: int | None, *, unit: str = "pairs", transient: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """Yield ``advance(n)`` of a bar counting to ``total``, or ``None`` when ``show`` is off; the bar stops on exit."""
    if not show:
        yield None
        return
    bar = stderr_progress(label, unit=unit, transient=transient)
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda n: bar.advance(task, n)
    finally:
        bar.stop()
