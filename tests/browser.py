"""Debian's Chromium for the browser tests (scripts/install-chromium installs it): where it is, how to launch it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

#: headless, no sandbox (containers), and none of Chromium's own calls home
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Return the Chromium executable, or fail the test saying how to get one."""
    path = os.environ.get("CROSSRANK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium not found: run scripts/install-chromium (Debian's chromium) or set CROSSRANK_CHROMIUM")
    return path


@contextmanager
def launched() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serve_process(args: list[str], log: Path, *, ready_s: float = 180) -> Iterator[str]:
    """Run ``crossrank serve ARGS --port P`` as its own process until the block ends; yield its base URL.

    It is ready when ``GET /ready`` answers 200; SIGTERM stops it (its log is in ``log``).
    """
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", *args, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + ready_s
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "crossrank serve did not become ready:\n" + log.read_text()
                time.sleep(0.2)
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises SIGTERM once it has drained, so -SIGTERM is a clean stop too
            assert proc.wait(120) in (0, -signal.SIGTERM), log.read_text()
