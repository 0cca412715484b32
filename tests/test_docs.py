"""The examples in public docstrings and the README's two commands stay true."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import crossrank.documents
import crossrank.drift
import crossrank.engine.registry
import crossrank.engine.testing
import crossrank.ranking
import crossrank.rerank.cross_encoder
import crossrank.retrieve.testing
import crossrank.signals

ROOT = Path(__file__).resolve().parents[1]


def test_public_docstring_examples_run() -> None:
    for module in (
        crossrank.rerank.cross_encoder,
        crossrank.engine.registry,
        crossrank.engine.testing,
        crossrank.ranking,
        crossrank.documents,
        crossrank.retrieve.testing,
        crossrank.signals,
        crossrank.drift,
    ):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None and readme.index("```bash") < 30
    commands = block.group(1).strip().splitlines()
    assert len(commands) == 2
    assert "crossrank rerank" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
