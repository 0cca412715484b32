"""Small helpers for the text of messages."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """Return ``count`` and ``noun``, the noun in the plural unless ``count`` is 1 or -1.

    The plural adds ``s``, ``es`` after s/x/z/ch/sh, and turns a consonant + ``y`` into ``ies``;
    only the last word changes ("judged query" -> "judged queries"). Pass ``plural_form`` for
    other nouns.

    Example:
        >>> plural(1, "judged query"), plural(3, "judged query"), plural(0, "pair")
        ('1 judged query', '3 judged queries', '0 pairs')
    """
    if abs(count) == 1:
        return f"{count} {noun}"
    if plural_form is not None:
        return f"{count} {plural_form}"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        many = noun + "es"
    elif len(noun) > 1 and noun.endswith("y") and noun[-2] not in "aeiou":
        many = noun[:-1] + "ies"
    else:
        many = noun + "s"
    return f"{count} {many}"
