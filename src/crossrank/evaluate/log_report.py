"""A label-free report from a request log (``crossrank serve --request-log``): one self-contained HTML page.

It shows the signals over time (rolling medians), the verdict of the fixed rule on the whole log,
the queries whose rankings the cross-encoder changed most, and, with a reference profile, how far
the log's traffic has drifted from it. Like the diagnostics report, the page embeds its plots as
PNG and makes no outside request.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from crossrank._deps import require
from crossrank.drift import DriftReport, Profile, drift
from crossrank.errors import InputError
from crossrank.evaluate.monitor import Verdict, verdict
from crossrank.signals import QuerySignals

__all__ = ["LogSummary", "read_request_log", "summarize_log", "write_log_report"]

_SIGNAL_FIELDS = {f.name for f in fields(QuerySignals)}
#: the signals plotted over time
PLOTTED = ("kendall_tau", "rbo", "top_score", "margin", "score_std", "truncated_share")


def read_request_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return a request log's records, oldest first: a log folder (rotated files included) or one file.

    Raises:
        InputError: nothing to read, or a line that is not a JSON record (named by file and line).
    """
    p = Path(path)
    if p.is_dir():
        old = sorted(p.glob("requests.*.jsonl"), key=lambda f: -int(f.name.split(".")[1]))
        files = [*old, *([p / "requests.jsonl"] if (p / "requests.jsonl").exists() else [])]
    elif p.exists():
        files = [p]
    else:
        raise InputError(f"request log {p} does not exist; point at the --request-log folder or one of its files")
    records: list[dict[str, Any]] = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{f}:{n}: not a JSON record; is this a crossrank request log?") from None
            if not isinstance(rec, dict) or "signals" not in rec:
                raise InputError(f"{f}:{n}: a record without signals; is this a crossrank request log?")
            records.append(rec)
    if not records:
        raise InputError(f"request log {p} holds no records yet; serve some requests with --request-log on")
    return records


def _signals(rec: dict[str, Any]) -> QuerySignals | None:
    raw = rec.get("signals")
    if not isinstance(raw, dict):
        return None
    return QuerySignals(**{k: v for k, v in raw.items() if k in _SIGNAL_FIELDS})


@dataclass(frozen=True)
class LogSummary:
    """What a request log says without labels.

    Attributes:
        records: requests in the log (those with signals).
        first, last: the first and last request's time (Unix seconds).
        verdict: the fixed rule's verdict on all of them.
        most_changed: the requests whose order moved most (lowest Kendall tau first), as records.
        drift: drift of the last ``window`` requests from the profile, when one was given.
        medians: each signal's median over the log.
    """

    records: int
    first: float
    last: float
    verdict: Verdict
    most_changed: list[dict[str, Any]]
    drift: DriftReport | None
    medians: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-ready values."""
        return {
            "records": self.records,
            "first": self.first,
            "last": self.last,
            "verdict": self.verdict.to_dict(),
            "medians": self.medians,
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "most_changed": self.most_changed,
        }


def summarize_log(
    records: list[dict[str, Any]], *, profile: Profile | None = None, window: int = 200, top: int = 10
) -> tuple[LogSummary, list[QuerySignals], list[float]]:
    """Return the log's summary, and its signals and times in order (for plots)."""
    pairs = [(rec, s) for rec in records if (s := _signals(rec)) is not None]
    if not pairs:
        raise InputError("the request log has no record with signals")
    recs, sigs = [r for r, _ in pairs], [s for _, s in pairs]
    times = [float(r.get("time", 0.0)) for r in recs]
    taus = np.array([s.kendall_tau for s in sigs])
    changed = [recs[i] for i in np.argsort(taus, kind="stable")[:top]]
    medians = {
        name: float(np.median([float(getattr(s, name)) for s in sigs if getattr(s, name) is not None]))
        for name in PLOTTED
    }
    report = drift(profile, sigs[-window:]) if profile is not None else None
    judged = verdict(sigs[-window:] if profile is not None else sigs, reference=profile)
    summary = LogSummary(len(recs), min(times), max(times), judged, changed, report, medians)
    return summary, sigs, times


def _plots(sigs: list[QuerySignals], times: list[float]) -> bytes:
    plt = require("matplotlib.pyplot", feature="the request-log report's plots")
    x = np.arange(1, len(sigs) + 1)
    fig, axes = plt.subplots(len(PLOTTED), 1, figsize=(8, 1.7 * len(PLOTTED)), sharex=True)
    w = max(1, min(50, len(sigs) // 10))
    for ax, name in zip(axes, PLOTTED, strict=True):
        y = np.array([float(getattr(s, name)) for s in sigs])
        ax.plot(x, y, ".", color="#9a9a9a", markersize=2)
        if len(y) >= w:
            roll = np.array([np.median(y[max(0, i - w + 1) : i + 1]) for i in range(len(y))])
            ax.plot(x, roll, color="#1f77b4", linewidth=1.5)
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel(f"request (in time order; line: rolling median of {w})", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _query(rec: dict[str, Any]) -> str:
    q = rec.get("query")
    return "(text dropped)" if q is None else str(q)


def write_log_report(
    log: str | os.PathLike[str],
    html_path: str | os.PathLike[str],
    *,
    profile: Profile | None = None,
    window: int = 200,
    json_path: str | os.PathLike[str] | None = None,
) -> LogSummary:
    """Read a request log and write the label-free HTML report (and its JSON, when asked)."""
    summary, sigs, times = summarize_log(read_request_log(log), profile=profile, window=window)
    e = html.escape
    png = base64.b64encode(_plots(sigs, times)).decode("ascii")
    when = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(summary.first))} to " + time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(summary.last)
    )
    v = summary.verdict
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>crossrank request log report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;line-height:1.45}",
        "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;",
        "text-align:left;vertical-align:top}.v{font-size:1.2rem;font-weight:600}img{max-width:100%}",
        "</style></head><body><h1>Request log report</h1>",
        f"<p>{summary.records} requests with signals, {e(when)}; no labels used.</p>",
        f"<p class='v' id='verdict'>Verdict: {e(v.label)}</p><p>{e(v.reason)}</p>",
        "<h2>Signals over time</h2>",
        f"<figure><img id='fig-signals' alt='signals over time' src='data:image/png;base64,{png}'></figure>",
        "<h2>Medians</h2><table><tr><th>signal</th><th>median</th></tr>",
        *(f"<tr><td>{e(k)}</td><td>{val:.4f}</td></tr>" for k, val in summary.medians.items()),
        "</table>",
    ]
    if summary.drift is not None:
        d = summary.drift
        parts.append(f"<h2 id='drift'>Drift from the profile (last {window} requests)</h2>")
        parts.append(f"<p>{'Drifted' if d.drifted else 'No drift'}: {e(json.dumps(d.to_dict())[:600])}</p>")
    parts.append("<h2 id='changed'>Requests the cross-encoder reordered most</h2><table>")
    parts.append("<tr><th>query</th><th>Kendall tau</th><th>first stage top 3</th><th>reranked top 3</th></tr>")
    for rec in summary.most_changed:
        s = rec["signals"]
        first, after = rec.get("first_stage", [])[:3], rec.get("reranked", [])[:3]
        parts.append(
            f"<tr><td>{e(_query(rec)[:200])}</td><td>{float(s['kendall_tau']):.3f}</td>"
            f"<td>{e(', '.join(map(str, first)))}</td><td>{e(', '.join(map(str, after)))}</td></tr>"
        )
    parts.append("</table></body></html>")
    out = Path(html_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(parts), encoding="utf-8")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary
