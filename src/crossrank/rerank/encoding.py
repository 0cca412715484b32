"""Pair encoding now lives in :mod:`crossrank.models.encoding`; this module re-exports it."""

from __future__ import annotations

from crossrank.models.encoding import EncodedPairs, PairEncoder

__all__ = ["EncodedPairs", "PairEncoder"]
