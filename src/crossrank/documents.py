"""What a model reads for a document: one rule, whatever door the document came in by.

A document is a plain string or a record ``{"id", "title"?, "text", "metadata"?}`` (BEIR's
``_id`` is accepted for ``id``). Reranking, retrieval, training data, diagnostics and the HTTP
service all read a titled record as ``"title text"``, so the same document gets the same score
everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["document_text", "record_text"]


def document_text(title: str, text: str) -> str:
    """Return the text a model reads for a document: ``"title text"``, or ``text`` when untitled.

    Example:
        >>> document_text("Cats", "A cat is a small feline."), document_text("", "No title.")
        ('Cats A cat is a small feline.', 'No title.')
    """
    return f"{title} {text}" if title.strip() else text


def record_text(record: Mapping[str, Any]) -> str:
    """Return :func:`document_text` of a record's ``title`` (optional) and ``text`` (missing: ``""``)."""
    return document_text(str(record.get("title") or ""), str(record.get("text") or ""))
