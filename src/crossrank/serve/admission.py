"""Admission under overload: take a request only if it can finish before its deadline; else say when to return.

The rule works in *work*, the batcher's estimate of what a request costs the model (see
:meth:`~crossrank.serve.model.ServedModel.pair_costs`), and in the rate at which the model does
work, measured on the server's own model calls. Seconds follow: ``work / rate``.

- A request is admitted when the work ahead of it plus its own ends within ``HEADROOM`` of the
  timeout, and admitting it delays no client already told to come back (below).
- A request too large to end within that even on an idle server is admitted only when nothing
  is queued ahead of it; it runs until its deadline.
- Otherwise it is refused at once with ``Retry-After``: the whole seconds (at least 1, rounded
  up) until the work ahead of it, queued requests and requests already told to come back, is down
  to ``LEAD_S`` seconds (so the model does not idle while a client is on its way). The refusal is
  a *promise*: the server plans that request's return and keeps its place, so clients that honour
  ``Retry-After`` come back one after another, each to a short queue, not all at once.
- A returning request is recognised by its content (a digest of its query and documents, the
  only identity a plain HTTP retry carries). It claims its place from ``EARLY_S`` before the time
  it was given until ``grace_s`` after, and is admitted if it can end within ``CLAIM_HEADROOM`` of
  the timeout; if the model ran slower than planned, it is told to come back as soon as it fits,
  ahead of the later promises. A promise nobody claims in time is dropped.

Everything here is plain arithmetic on the numbers given; the caller holds the lock and the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CLAIM_HEADROOM",
    "EARLY_S",
    "HEADROOM",
    "LEAD_S",
    "MAX_PROMISES",
    "MAX_RETRY_AFTER_S",
    "Admission",
    "Decision",
]

#: a request is admitted when it would end within this share of the timeout (the rest absorbs a slower model)
HEADROOM = 0.8
#: a client back when it was told to come is admitted if it would end within this share of the timeout
CLAIM_HEADROOM = 0.95
#: a refused client is told to return when this many seconds of work are left ahead of it (Retry-After
#: is rounded up to whole seconds and clients are a little late: the model keeps busy meanwhile)
LEAD_S = 2.0
#: how early (seconds) before its time a returning client may claim its place
EARLY_S = 0.25
#: most clients the server keeps room for at once; beyond, a refusal says when to return but reserves nothing
MAX_PROMISES = 1024
#: the longest Retry-After the server gives
MAX_RETRY_AFTER_S = 3600


@dataclass(slots=True)
class _Promise:
    due: float  # when the client was told to return
    work: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request.

    Attributes:
        admitted: queue it.
        retry_after: when refused, whole seconds until the client should send it again.
        reason: when refused, ``"queue_full"`` (no free place) or ``"over_capacity"`` (it would
            not finish before its deadline behind the work ahead).
        wait_s: the work ahead of it, in seconds at the measured rate.
    """

    admitted: bool
    retry_after: int | None = None
    reason: Literal["queue_full", "over_capacity"] | None = None
    wait_s: float = 0.0


class Admission:
    """The promises made to refused clients, and the rule that admits or refuses a request.

    Args:
        timeout_s: seconds a request has from its arrival to its answer.
        grace_s: how long after its time a promise is kept for a client that has not come back.
    """

    def __init__(self, timeout_s: float, *, grace_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.grace_s = max(2.0, timeout_s / 4) if grace_s is None else grace_s
        self._promises: OrderedDict[bytes, _Promise] = OrderedDict()  # in order of due time

    @property
    def promises(self) -> int:
        """Return how many refused clients the server keeps room for."""
        return len(self._promises)

    def decide(self, key: bytes, work: float, *, ahead: float, rate: float, now: float, room: bool) -> Decision:
        """Return whether to admit a request, and when it is refused, when it should come back.

        Args:
            key: the request's content digest (a retry of the same request has the same one).
            work: what the request costs, in the rate's units.
            ahead: work queued or running ahead of it.
            rate: work per second the model does (> 0).
            now: the current time, in seconds on the clock promises are kept in.
            room: whether the queue has a free place (its size limit).
        """
        self._expire(now)
        budget = HEADROOM * self.timeout_s
        own_s = work / rate
        wait_s = ahead / rate
        reason: Literal["queue_full", "over_capacity"] = "over_capacity" if room else "queue_full"
        mine = self._promises.get(key)
        if mine is not None and now >= mine.due - EARLY_S:  # back when told: its place was kept
            del self._promises[key]
            limit = CLAIM_HEADROOM * self.timeout_s
            if room and (wait_s + own_s <= limit or ahead <= 0):
                return Decision(True, wait_s=wait_s)
            # the model ran slower than planned: back as soon as it fits, ahead of later promises
            retry_after = _seconds(wait_s + own_s - limit)
            self._promise(key, _Promise(now + retry_after, work))
            return Decision(False, retry_after, reason, wait_s)
        if room and self._fits(own_s, wait_s, ahead, budget) and self._keeps_promises(key, own_s, wait_s, rate, now):
            if mine is not None:  # back early, and there is room anyway
                del self._promises[key]
            return Decision(True, wait_s=wait_s)
        if mine is not None:  # back too early: the same place, a shorter wait
            return Decision(False, _seconds(mine.due - now), reason, wait_s)
        end = self._plan_end(now + wait_s, rate)
        back = max(now, end - self._lead(own_s, budget)) if own_s <= budget else max(now, end)
        retry_after = _seconds(back - now)
        if len(self._promises) < MAX_PROMISES and retry_after < MAX_RETRY_AFTER_S:
            self._promise(key, _Promise(now + retry_after, work))
        return Decision(False, retry_after, reason, wait_s)

    def forget(self) -> None:
        """Drop every promise (the server is stopping)."""
        self._promises.clear()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _fits(own_s: float, wait_s: float, ahead: float, budget: float) -> bool:
        if own_s > budget:  # cannot end in time even alone: only with nothing queued ahead
            return ahead <= 0
        return wait_s + own_s <= budget

    @staticmethod
    def _lead(own_s: float, budget: float) -> float:
        """Return the seconds of work a returning client is planned to find ahead of it."""
        return max(0.0, min(LEAD_S, budget - own_s))

    def _keeps_promises(self, key: bytes, own_s: float, wait_s: float, rate: float, now: float) -> bool:
        """Return whether every promised client still ends when planned if this request goes first.

        A promised client is planned to find ``LEAD_S`` of work ahead when it returns, and so to
        end by its time plus that lead plus its own work: a new request may take only the room a
        promise leaves, never push one later.
        """
        budget = HEADROOM * self.timeout_s
        t = now + wait_s + own_s
        for k, p in self._promises.items():
            if k == key:
                continue
            p_s = p.work / rate
            t = max(t, p.due) + p_s
            if t > p.due + self._lead(p_s, budget) + p_s:
                return False
        return True

    def _plan_end(self, start: float, rate: float) -> float:
        """Return when the work ahead and every promised return would be done, starting at ``start``."""
        t = start
        for p in self._promises.values():
            t = max(t, p.due) + p.work / rate
        return t

    def _expire(self, now: float) -> None:
        while self._promises:
            key, first = next(iter(self._promises.items()))
            if first.due + self.grace_s >= now:
                break
            del self._promises[key]

    def _promise(self, key: bytes, promise: _Promise) -> None:
        # keep the promises in order of due time, so expiry and the plan walk them front to back;
        # a small request may be told to return before a large one refused just before it
        last = next(reversed(self._promises.values()), None)
        self._promises[key] = promise
        if last is not None and promise.due < last.due:
            self._promises = OrderedDict(sorted(self._promises.items(), key=lambda kv: kv[1].due))


def _seconds(delay: float) -> int:
    """Return ``delay`` as Retry-After: whole seconds, rounded up, at least 1, at most the cap."""
    return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(delay - 1e-9))))
