"""The language a customer writes in, told from the letters of their mail.

Only what letters show reliably is told: Cyrillic text is Russian, unless it holds letters
Russian does not use (Ukrainian's і, ї, є, ґ; Belarusian's ў; any other makes it a language
not named here). Latin letters say nothing (English, German, French ... share them), so a
mail written in them leaves the language unknown and the configured default applies.

Cyrillic counts from ``CYRILLIC_SHARE`` of the letters, not from half of them: Russian
business mail is full of Latin product names, error codes and signatures ("Не открывается
PDF из SharePoint после обновления Windows 11"), while English mail with a third of its
letters in Cyrillic is rare. A stray name in another Cyrillic script ("Київ") does not make
Russian text Ukrainian: foreign letters count from ``FOREIGN_SHARE`` of the Cyrillic ones.
"""

from __future__ import annotations

import re
from collections.abc import Collection

CYRILLIC_SHARE = 0.3
FOREIGN_SHARE = 0.02
# The text read: the language shows in its first lines, and a pasted log need not be counted.
_MAX_CHARS = 3_000

# Runs of letters, counted by their lengths: a list of runs is a fraction of a list of letters.
_LETTERS = re.compile(r"[^\W\d_]+")
_CYRILLIC = re.compile(r"[\u0400-\u052f]+")
# Cyrillic letters outside Russian's а-я and ё, either case.
_FOREIGN = re.compile(r"[\u0400\u0402-\u040f\u0450\u0452-\u052f]")
# Letters that name the language when the text is Cyrillic but not Russian, in this order
# (Belarusian shares Ukrainian's і).
_NAMED_BY = (("be", re.compile(r"[ўЎ]")), ("uk", re.compile(r"[іїєґІЇЄҐ]")))


def detect_language(text: str, available: Collection[str]) -> str | None:
    """The language ``text`` is written in, if it is one of ``available``; else None."""
    sample = text[:_MAX_CHARS]
    cyrillic = _count(_CYRILLIC, sample)
    if cyrillic == 0 or cyrillic < CYRILLIC_SHARE * _count(_LETTERS, sample):
        return None
    found = _cyrillic_language(sample, cyrillic)
    return found if found in available else None


def _count(runs: re.Pattern[str], text: str) -> int:
    return sum(map(len, runs.findall(text)))


def _cyrillic_language(sample: str, cyrillic: int) -> str | None:
    if len(_FOREIGN.findall(sample)) <= FOREIGN_SHARE * cyrillic:
        return "ru"
    for language, letters in _NAMED_BY:
        if letters.search(sample):
            return language
    return None
