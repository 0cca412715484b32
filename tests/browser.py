"""Debian's Chromium for the browser tests (scripts/install-chromium installs it): where it is, how to launch it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
