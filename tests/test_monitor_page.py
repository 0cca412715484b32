"""The monitor page at ``/monitor``: the recent rerankings' signals over time, in Debian's Chromium.

A real server with the default model and a reference profile answers real DL 2019 rerank
requests; the page must plot exactly the series ``GET /v1/monitor`` returns and show its windows
and drift state. The screenshot goes to ``$CROSSRANK_PLAYGROUND_SHOTS`` when set (docs/playground).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from browser import launched
from crossrank import CrossEncoder
from crossrank.drift import Profile
from test_serve import dl19_candidates, serving

DEPTH = 30
REPEATS = 3  # each of the 10 shipped DL 2019 queries, three times


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


def test_the_monitor_page_plots_what_the_api_reports(default_model: CrossEncoder, browser: Browser) -> None:
    from crossrank.serve import create_app

    work = dl19_candidates(10, DEPTH)
    reference = [default_model.rerank(q, docs).signals for q, docs in work]
    profile = Profile.from_signals([s for s in reference if s is not None], model="default", source="DL 2019 slice")
    with serving(create_app(default_model, profile=profile)) as base, httpx.Client(timeout=120) as http:
        for _ in range(REPEATS):
            for q, docs in work:
                r = http.post(f"{base}/v2/rerank", json={"model": "default", "query": q, "documents": docs})
                assert r.status_code == 200
        api = http.get(f"{base}/v1/monitor").json()
        total = len(work) * REPEATS
        assert api["total"] == total and len(api["series"]["time"]) == total
        assert api["series"]["time"] == sorted(api["series"]["time"])

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []
        page.route(
            "**/*",
            lambda r: r.continue_() if r.request.url.startswith(base) else (outside.append(r.request.url), r.abort()),
        )
        page.goto(f"{base}/monitor")
        page.wait_for_function(f"() => document.body.dataset.total === '{total}'", timeout=60_000)
        assert page.inner_text("#mon-total") == str(total)
        # one plot per signal, one point per reranking, in the API's order and values
        for name in ("kendall_tau", "top_score", "margin", "score_std", "truncated_share"):
            plot = f"figure.plot[data-signal='{name}']"
            assert page.locator(f"{plot} circle").count() == total
            assert page.locator(f"{plot} polyline").count() == 1
        ys = page.eval_on_selector_all(
            "figure.plot[data-signal='top_score'] circle", "cs => cs.map(c => Number(c.getAttribute('cy')))"
        )
        values = api["series"]["top_score"]
        lo, hi = min(0.0, *values), max(1.0, *values)
        want = [80 - 4 - (v - lo) / (hi - lo) * 72 for v in values]
        assert ys == pytest.approx(want, abs=0.06)
        row = page.locator("tr[data-window='last_100'] td")
        assert row.nth(1).inner_text() == str(total)
        drift_word = "drifted" if api["windows"]["last_100"]["drift"]["drift"] else "steady"
        assert row.last.inner_text() == drift_word
        assert ("drifted" if api["drift"] else "steady") in page.inner_text("#mon-drift")
        assert "DL 2019 slice" in page.inner_text("#mon-profile")
        assert not outside
        shots = os.environ.get("CROSSRANK_PLAYGROUND_SHOTS")
        if shots:
            page.screenshot(path=str(Path(shots) / "monitor.png"), full_page=True)
        page.close()
