"""Write :class:`~crossrank.evaluate.diagnostics.Diagnostics` as JSON, Markdown and one HTML file.

The HTML file is self-contained (plots embedded as PNG, no scripts, no outside requests), so it
can be mailed, attached to a ticket or opened from disk. The Markdown file links the same plots,
written as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crossrank._deps import require
from crossrank._text import plural
from crossrank.evaluate.diagnostics import Diagnostics, FailureCase

__all__ = ["headline", "plot_figures", "render_html", "render_markdown", "write_report"]

_BLUE, _ORANGE, _GREY, _RED, _GREEN = "#1f77b4", "#ff7f0e", "#9a9a9a", "#d62728", "#2ca02c"


def write_report(
    diag: Diagnostics,
    *,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    html_path: Path | None = None,
) -> list[Path]:
    """Write the report in each format asked for; return the files written (plots included)."""
    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(diag.to_dict(), indent=2) + "\n", encoding="utf-8")
        written.append(json_path)
    if markdown_path is None and html_path is None:
        return written
    figures = plot_figures(diag)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        folder = markdown_path.parent / f"{markdown_path.stem}-figures"
        folder.mkdir(exist_ok=True)
        links = {}
        for name, png in figures.items():
            (folder / f"{name}.png").write_bytes(png)
            written.append(folder / f"{name}.png")
            links[name] = f"{folder.name}/{name}.png"
        markdown_path.write_text(render_markdown(diag, links), encoding="utf-8")
        written.append(markdown_path)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(diag, figures), encoding="utf-8")
        written.append(html_path)
    return written


# ---------------------------------------------------------------- plots


def plot_figures(diag: Diagnostics) -> dict[str, bytes]:
    """Return the report's plots as PNG bytes, by name."""
    require("matplotlib", feature="the report's plots")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(name: str, draw: Callable[[Any], None], size: tuple[float, float] = (7.0, 3.6)) -> None:
        fig, ax = plt.subplots(figsize=size, dpi=110)
        try:
            draw(ax)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            out[name] = buf.getvalue()
        finally:
            plt.close(fig)

    main = diag.main

    def per_query(ax: Any) -> None:
        deltas = sorted(v["delta"] for v in diag.per_query.values())
        colors = [_GREEN if d > 1e-9 else _RED if d < -1e-9 else _GREY for d in deltas]
        ax.bar(range(len(deltas)), deltas, color=colors, width=1.0)
        ax.axhline(0, color="black", lw=0.8)
        c = diag.comparison.get(main, {})
        ax.set_title(
            f"{main} per query: reranked minus {diag.first_stage} "
            f"(wins {c.get('wins', 0)}, ties {c.get('ties', 0)}, losses {c.get('losses', 0)})",
            fontsize=10,
        )
        ax.set_xlabel("queries, sorted by change")
        ax.set_ylabel(f"Δ {main}")

    def depth_sweep(ax: Any) -> None:
        depths = [p["depth"] for p in diag.depth_sweep]
        quality = [p["measures"][main] for p in diag.depth_sweep]
        first = diag.aggregate[diag.first_stage][main]
        ax.plot(depths, quality, marker="o", color=_BLUE, label=f"{main} after reranking")
        ax.axhline(first, color=_GREY, ls="--", lw=1, label=f"{diag.first_stage} alone")
        knee_q = next(q for d, q in zip(depths, quality, strict=True) if d == diag.knee)
        ax.scatter(
            [diag.knee],
            [knee_q],
            s=160,
            facecolors="none",
            edgecolors=_RED,
            lw=2,
            zorder=5,
            label=f"knee: depth {diag.knee}",
        )
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_xlabel("rerank depth (candidates)")
        ax.set_ylabel(main, color=_BLUE)
        ax2 = ax.twinx()
        ax2.plot(
            depths,
            [p["latency_ms_p50"] for p in diag.depth_sweep],
            marker="s",
            color=_ORANGE,
            label="rerank latency p50",
        )
        ax2.set_ylabel("ms per query (p50)", color=_ORANGE)
        ax2.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
        ax.set_title("Depth sweep: quality and latency per depth", fontsize=10)

    def recall(ax: Any) -> None:
        depths = [r["depth"] for r in diag.recall]
        ax.plot(depths, [r["recall"] for r in diag.recall], marker="o", color=_BLUE)
        ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"{diag.first_stage} depth")
        ax.set_ylabel("share of relevant found")
        ax.set_title(f"Recall ceiling: relevant documents (grade ≥ {diag.config.rel}) in the candidates", fontsize=10)
        ax.grid(alpha=0.3)

    def distributions(ax: Any) -> None:
        edges = np.asarray(diag.scores["edges"])
        mids = (edges[:-1] + edges[1:]) / 2
        for name, color in (("relevant", _GREEN), ("non-relevant", _RED), ("unjudged", _GREY)):
            counts = np.asarray(diag.scores["histograms"][name], dtype=np.float64)
            if counts.sum() == 0:
                continue
            ax.step(
                mids, counts / counts.sum(), where="mid", color=color, label=f"{name} ({int(counts.sum())})", lw=1.8
            )
        ax.set_xlabel(f"score ({diag.activation})")
        ax.set_ylabel("share of pairs")
        ax.legend(fontsize=8)
        ax.set_title("Score distributions", fontsize=10)

    def reliability(ax: Any) -> None:
        curve = diag.scores["reliability"]
        ax.plot([0, 1], [0, 1], color=_GREY, ls="--", lw=1, label="perfectly calibrated")
        ax.plot(
            [b["mean_predicted"] for b in curve],
            [b["fraction_positive"] for b in curve],
            marker="o",
            color=_BLUE,
            label="model",
        )
        for b in curve:
            ax.annotate(
                str(int(b["count"])),
                (b["mean_predicted"], b["fraction_positive"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("fraction relevant")
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"Reliability (judged pairs; ECE {diag.scores['ece']:.3f})", fontsize=10)

    save("per_query", per_query)
    save("depth_sweep", depth_sweep)
    save("recall", recall)
    save("scores", distributions)
    if diag.scores.get("reliability"):
        save("reliability", reliability, size=(4.6, 4.2))
    return out


# ---------------------------------------------------------------- text


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _summary_rows(diag: Diagnostics) -> tuple[list[str], list[list[str]]]:
    head = ["", *diag.measures]
    rows = [[name, *(_fmt(vals[m]) for m in diag.measures)] for name, vals in diag.aggregate.items()]
    return head, rows


def _comparison_rows(diag: Diagnostics) -> tuple[list[str], list[list[str]]]:
    head = ["measure", "Δ mean", "95% CI", "t-test p", "randomization p", "wins / ties / losses", "significant"]
    rows = []
    for m, c in diag.comparison.items():
        rows.append(
            [
                m,
                f"{c['mean_diff']:+.4f}",
                f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
                _p(c["t_p"]),
                _p(c["randomization_p"]),
                f"{c['wins']} / {c['ties']} / {c['losses']}",
                "yes" if c["significant"] else "no",
            ]
        )
    return head, rows


def _sweep_rows(diag: Diagnostics) -> tuple[list[str], list[list[str]]]:
    head = ["depth", *diag.measures, "recall ceiling", "p50 ms", "p95 ms", "pairs/s", ""]
    ceiling = {r["depth"]: r["recall"] for r in diag.recall}
    rows = []
    for p in diag.depth_sweep:
        rows.append(
            [
                str(p["depth"]),
                *(_fmt(p["measures"][m]) for m in diag.measures),
                _fmt(ceiling.get(p["depth"]), 3),
                f"{p['latency_ms_p50']:.1f}",
                f"{p['latency_ms_p95']:.1f}",
                f"{p['pairs_per_s']:.0f}",
                "← knee" if p["depth"] == diag.knee else "",
            ]
        )
    return head, rows


def _recall_rows(diag: Diagnostics) -> tuple[list[str], list[list[str]]]:
    head = ["depth", "recall", "queries with no relevant candidate"]
    return head, [
        [str(r["depth"]), _fmt(r["recall"], 3), f"{r['queries_without_relevant']} of {r['queries']}"]
        for r in diag.recall
    ]


def _facts(diag: Diagnostics) -> list[str]:
    t, d = diag.truncation, diag.duplicates
    sc = diag.scores
    facts = [
        f"Truncated pairs: {t['truncated']} of {t['pairs']} ({100 * t['share']:.1f}%) at max_length "
        f"{t['max_length']}, in {plural(t['queries_affected'], 'query')}; {t['relevant_truncated']} of "
        f"{plural(t['relevant_pairs'], 'relevant pair')} {'was' if t['relevant_truncated'] == 1 else 'were'} "
        "truncated.",
        f"Duplicate documents among the top {diag.depth}: "
        f"{plural(d['identical_text_groups'], 'group')} of identical texts "
        f"({plural(d['identical_text_extra_copies'], 'extra copy')}); "
        f"repeated run entries: {d['run_entries_repeated']}.",
        "Mean score: "
        + ", ".join(f"{k} {_fmt(v, 3)} ({plural(sc['counts'][k], 'pair')})" for k, v in sc["means"].items())
        + ".",
    ]
    if sc.get("ece") is not None:
        facts.append(f"Expected calibration error on judged pairs: {sc['ece']:.4f} ({diag.config.bins} bins).")
    return facts


def headline(diag: Diagnostics) -> str:
    """Return the report's one-sentence verdict: whether reranking helps, by how much, and how sure."""
    m = diag.main
    c = diag.comparison.get(m)
    base = diag.aggregate[diag.first_stage][m]
    new = diag.aggregate[f"rerank@{diag.depth}"][m]
    verdict = "helps" if new > base else "hurts" if new < base else "changes nothing"
    text = f"Reranking the top {diag.depth} {verdict}: {m} {base:.4f} → {new:.4f}"
    if c:
        text += (
            f" ({c['mean_diff']:+.4f}, 95% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
            f"{'significant' if c['significant'] else 'not significant'} at alpha {diag.config.alpha}; "
            f"{plural(c['wins'], 'query')} better, {c['losses']} worse)"
        )
    ceiling = next((r for r in diag.recall if r["depth"] == diag.depth), None)
    knee = next(p for p in diag.depth_sweep if p["depth"] == diag.knee)
    text += (
        f". The knee is depth {diag.knee} ({m} {knee['measures'][m]:.4f}, p50 {knee['latency_ms_p50']:.0f} ms"
        f" per query, within {diag.config.tolerance} of the best depth)."
    )
    if ceiling:
        text += (
            f" The first stage finds {100 * ceiling['recall']:.0f}% of the relevant documents in its top {diag.depth}."
        )
    return text


def _preview(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


def _grade(g: int | None) -> str:
    return "unjudged" if g is None else f"grade {g}"


# ---------------------------------------------------------------- Markdown


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(diag: Diagnostics, figures: dict[str, str]) -> str:
    """Return the report as Markdown; ``figures`` maps plot names to relative links."""
    out = [f"# {diag.title}", ""]
    out += [
        f"Model `{diag.model}` (scores: {diag.activation}) reranking `{diag.first_stage}`, "
        f"{plural(diag.queries, 'judged query')}; relevant = grade ≥ {diag.config.rel} for binary measures.",
        "",
    ]
    if diag.command:
        out += ["Reproduce:", "", "```bash", diag.command, "```", ""]
    out += [headline(diag), "", "## Summary", "", _md_table(*_summary_rows(diag)), ""]
    out += ["## Per-query changes", "", _md_table(*_comparison_rows(diag)), ""]
    if "per_query" in figures:
        out += [f"![per-query changes]({figures['per_query']})", ""]
    out += ["## Depth sweep", "", _md_table(*_sweep_rows(diag)), ""]
    if "depth_sweep" in figures:
        out += [f"![depth sweep]({figures['depth_sweep']})", ""]
    out += ["## Recall ceiling", "", _md_table(*_recall_rows(diag)), ""]
    if "recall" in figures:
        out += [f"![recall ceiling]({figures['recall']})", ""]
    out += ["## Failure cases", ""]
    for f in diag.failures:
        out += _md_failure(diag, f)
    if not diag.failures:
        out += ["Reranking made no query worse.", ""]
    out += ["## Truncation, duplicates and scores", ""]
    out += [f"- {x}" for x in _facts(diag)] + [""]
    for name, label in (("scores", "score distributions"), ("reliability", "reliability curve")):
        if name in figures:
            out += [f"![{label}]({figures[name]})", ""]
    if diag.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in diag.notes] + [""]
    return "\n".join(out)


def _md_failure(diag: Diagnostics, f: FailureCase) -> list[str]:
    out = [
        f"### {f.query_id}: {f.query}",
        "",
        f"{diag.main} {f.first_stage:.4f} → {f.reranked:.4f}; "
        f"{plural(f.relevant_in_candidates, 'relevant candidate')}.",
        "",
    ]
    for label, docs in (("Relevant documents demoted", f.demoted), ("Non-relevant documents promoted", f.promoted)):
        if not docs:
            continue
        out += [f"{label}:", ""]
        for d in docs:
            trunc = ", truncated" if d.truncated else ""
            out += [
                f"- `{d.doc_id}` ({_grade(d.grade)}, rank {d.first_rank} → {d.reranked_rank}, "
                f"score {d.score:.3f}{trunc}): {_preview(d.text, 300)}"
            ]
        out += [""]
    return out


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{font-size:1rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.headline{background:#f0f6ff;border-left:4px solid #1f77b4;padding:.6rem .9rem}
figure{margin:.8rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
.doc{font-size:.85rem;color:#333;margin:.2rem 0 .6rem 0}.tag{font-size:.75rem;background:#eee;border-radius:3px;
padding:0 .3rem;margin-right:.3rem}.bad{background:#fde2e2}.good{background:#e3f6e3}
pre{background:#f6f6f6;padding:.5rem;white-space:pre-wrap;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:1rem}
"""


def _html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _img(figures: dict[str, bytes], name: str, alt: str) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode("ascii")
    return f'<figure><img id="fig-{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_html(diag: Diagnostics, figures: dict[str, bytes]) -> str:
    """Return the report as one self-contained HTML page (plots embedded as PNG)."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(diag.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(diag.title)}</h1>",
        f"<p>Model <code>{e(diag.model)}</code> (scores: {e(diag.activation)}) reranking "
        f"<code>{e(diag.first_stage)}</code>, {plural(diag.queries, 'judged query')}; "
        f"relevant = grade ≥ {diag.config.rel} "
        "for binary measures.</p>",
    ]
    if diag.command:
        parts.append(f"<pre>{e(diag.command)}</pre>")
    parts += [
        f"<p class='headline' id='headline'>{e(headline(diag))}</p>",
        "<h2 id='summary'>Summary</h2>",
        _html_table(*_summary_rows(diag), "summary"),
        "<h2 id='per-query'>Per-query changes</h2>",
        _html_table(*_comparison_rows(diag), "comparison"),
        _img(figures, "per_query", "per-query changes"),
        "<h2 id='depth'>Depth sweep</h2>",
        _html_table(*_sweep_rows(diag), "sweep"),
        _img(figures, "depth_sweep", "depth sweep"),
        "<h2 id='recall'>Recall ceiling</h2>",
        _html_table(*_recall_rows(diag), "recall"),
        _img(figures, "recall", "recall ceiling"),
        "<h2 id='failures'>Failure cases</h2>",
    ]
    if not diag.failures:
        parts.append("<p>Reranking made no query worse.</p>")
    for f in diag.failures:
        parts.append(f"<h3 class='failure'>{e(f.query_id)}: {e(f.query)}</h3>")
        parts.append(
            f"<p>{e(diag.main)} {f.first_stage:.4f} → {f.reranked:.4f}; "
            f"{plural(f.relevant_in_candidates, 'relevant candidate')}.</p>"
        )
        for label, docs, cls in (
            ("Relevant documents demoted", f.demoted, "bad"),
            ("Non-relevant documents promoted", f.promoted, "bad"),
        ):
            if not docs:
                continue
            parts.append(f"<p><b>{label}</b></p>")
            for d in docs:
                trunc = "<span class='tag'>truncated</span>" if d.truncated else ""
                parts.append(
                    f"<div class='doc'><span class='tag {cls}'>{e(d.doc_id)}</span>"
                    f"<span class='tag'>{e(_grade(d.grade))}</span>"
                    f"<span class='tag'>rank {d.first_rank} → {d.reranked_rank}</span>"
                    f"<span class='tag'>score {d.score:.3f}</span>{trunc} {e(_preview(d.text))}</div>"
                )
    parts.append("<h2 id='scores'>Truncation, duplicates and scores</h2><ul>")
    parts += [f"<li>{e(x)}</li>" for x in _facts(diag)]
    parts.append("</ul><div class='figs'>")
    parts += [_img(figures, "scores", "score distributions"), _img(figures, "reliability", "reliability curve")]
    parts.append("</div>")
    if diag.notes:
        parts.append("<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in diag.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
