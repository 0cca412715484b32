"""Calibration pairs for static int8 quantization, made from text every Python install has.

Static quantization fixes each activation's int8 range ahead of time from sample inputs. The
samples must look like real (query, document) pairs in English, but crossrank cannot ship a
retrieval corpus under a permissive licence. Python's standard-library docstrings are English
prose, present on every machine and PSF-licensed: queries are API names ("how to use
read text"), documents are docstrings, half of them matching and half not. On TREC DL 2019 this
calibration on 600 pairs kept nDCG@10 within 0.002 of the fp32 model (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import warnings

from crossrank.errors import ConfigError

__all__ = ["stdlib_pairs"]

_MODULES = (
    "abc",
    "argparse",
    "array",
    "ast",
    "bisect",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "gettext",
    "glob",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "itertools",
    "json",
    "locale",
    "logging",
    "mailbox",
    "math",
    "mmap",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "select",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "tokenize",
    "trace",
    "tracemalloc",
    "types",
    "typing",
    "unittest",
    "urllib.request",
    "uuid",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "zipfile",
)


#: how many pairs a built-in's static int8 OpenVINO graph is calibrated on, unless overridden
CALIBRATION_PAIRS = 600
CALIBRATION_PAIRS_ENV = "CROSSRANK_CALIBRATION_PAIRS"


def calibration_pairs() -> int:
    """Return the pairs a static int8 calibration uses: ``$CROSSRANK_CALIBRATION_PAIRS`` or 600.

    Fewer pairs build faster (600 take about 100 s for ``fast`` on 2 AVX2 cores, 40 about 20 s)
    and may rank a little worse; the count is part of the cached graph's name.

    Raises:
        ConfigError: the variable is not a whole number from 8 to 5000.
    """
    raw = os.environ.get(CALIBRATION_PAIRS_ENV, "").strip()
    if not raw:
        return CALIBRATION_PAIRS
    if not raw.isdigit() or not 8 <= int(raw) <= 5000:
        raise ConfigError(f"{CALIBRATION_PAIRS_ENV}={raw!r} must be a whole number from 8 to 5000 (default 600)")
    return int(raw)


def stdlib_pairs(n: int = 600, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Return up to ``n`` (query, document) pairs as two lists, deterministic for a Python version and seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some stdlib attributes warn when touched (typing.io)
        docs = _docstrings()
    rng = random.Random(seed)
    picked = rng.sample(docs, min(n, len(docs)))
    queries = [f"how to use {q}" if i % 2 else q for i, (q, _) in enumerate(picked)]
    documents = [d if i % 2 == 0 else picked[(i + 7) % len(picked)][1] for i, (_, d) in enumerate(picked)]
    return queries, documents


def _docstrings() -> list[tuple[str, str]]:
    docs: list[tuple[str, str]] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a trimmed Python may lack a module
            continue
        for attr, obj in sorted(vars(module).items()):
            # only what the module defines itself: what it re-exports depends on what else is imported
            if getattr(obj, "__module__", None) != module.__name__ or not callable(obj):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200 and not attr.startswith("_"):
                docs.append((attr.replace("_", " "), " ".join(doc.split())))
    return docs
