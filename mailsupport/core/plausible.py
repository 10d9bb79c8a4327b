"""Judge which of several readings of legacy bytes is text a person wrote.

Most single-byte code pages accept any bytes, so a GB2312 subject read as Latin-1 or a KOI8-R
word read as cp1251 decodes without error into text nobody wrote: ``ÄúºÃ£¬´òÓ¡`` for
``您好，打印``, ``феуф`` for ``ТЕСТ``. Such readings give themselves away by what writing never
does: a word mixing alphabets, a capital inside a word after a small letter, accented Latin
letters with no plain one among them, stray symbols, and, between the two Russian code pages,
letters that Russian text hardly uses. Everything here is pure.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata

# A reading holding a control character, a private-use or unassigned code point cannot be text.
UNREADABLE = 1_000
# What one such oddity costs; a reading's implausibility is the sum.
_MIXED_SCRIPT_WORD = 3
_EXTRA_SCRIPT = 3
_CASE_INSIDE_WORD = 2
_ACCENTS_ONLY = 2
_IMPOSSIBLE_START = 2
_STRAY_SYMBOL = 1
_INVISIBLE = 2  # a soft hyphen or another format character: nobody types one in a subject

# The first word of a character's Unicode name, for the scripts mail is written in. Chinese and
# Japanese characters, kana and full-width forms are one writing system; half-width katakana
# (what Chinese bytes turn into as Shift_JIS) and lone Hangul letters (what Japanese kana turn
# into as EUC-KR) are kept apart.
_SCRIPTS = {
    "LATIN": "latin",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "HEBREW": "hebrew",
    "ARABIC": "arabic",
    "THAI": "thai",
    "HANGUL": "hangul",
    "CJK": "cjk",
    "HIRAGANA": "cjk",
    "KATAKANA": "cjk",
    "KATAKANA-HIRAGANA": "cjk",
    "IDEOGRAPHIC": "cjk",
    "FULLWIDTH": "cjk",
    "BOPOMOFO": "bopomofo",
    "HALFWIDTH": "halfwidth",
    "ARMENIAN": "armenian",
    "GEORGIAN": "georgian",
}
# Non-ASCII punctuation common in subjects and names, in every script.
_COMMON_SYMBOLS = frozenset("«»„“”‘’‚–—…•№°€™©®§·\u00a0")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_KANA = re.compile(r"[\u3040-\u30ff]")
_CYRILLIC_RUN = re.compile(r"[\u0400-\u04ff]+")

# Letter frequencies of Russian text, per thousand letters (Russian National Corpus). A cp1251
# reading of KOI8-R bytes and the reverse are both Cyrillic; which letters come out tells them
# apart: "ТЕСТ" is common letters, its cp1251 reading "феуф" rare ones.
_RUSSIAN_FREQUENCY = {
    "о": 109.7, "е": 84.5, "а": 80.1, "и": 73.5, "н": 67.0, "т": 62.6, "с": 54.7, "р": 47.3,
    "в": 45.4, "л": 44.0, "к": 34.9, "м": 32.1, "д": 29.8, "п": 28.1, "у": 26.2, "я": 20.1,
    "ы": 19.0, "ь": 17.4, "г": 17.0, "з": 16.5, "б": 15.9, "ч": 14.4, "й": 12.1, "х": 9.7,
    "ж": 9.4, "ш": 7.3, "ю": 6.4, "ц": 4.8, "щ": 3.6, "э": 3.2, "ф": 2.6, "ъ": 0.4, "ё": 0.4,
}  # fmt: skip
_OTHER_CYRILLIC = 0.2  # Ukrainian, Belarusian or Serbian letters in a Russian code page
# Each word in capitals throughout: less common than small letters, so a reading made of such
# words needs letters that much more likely to win.
_ALL_CAPITALS = 1.0
_NO_WORD_STARTS_WITH = frozenset("ьъы")
_VOWELS = frozenset("аеёиоуыэюя")
_IMPOSSIBLE = 5.0
_UNLIKELY = 3.0


def implausibility(text: str) -> int:
    """How unlike written text ``text`` is: 0 for nothing odd, UNREADABLE for no text at all."""
    penalty = 0
    scripts: set[str] = set()
    for character in text:
        if character.isascii() or _is_letter(character):
            continue
        category = unicodedata.category(character)
        if category in ("Cc", "Co", "Cn", "Cs") or character == "\ufffd":
            return UNREADABLE
        if category == "Cf":
            penalty += _INVISIBLE
        elif category[0] != "M" and not _is_common_symbol(character):
            penalty += _STRAY_SYMBOL
    for word in _WORD.findall(text):
        penalty += _word_penalty(word, scripts)
    return penalty + _EXTRA_SCRIPT * max(0, len(scripts) - 1)


def _word_penalty(word: str, scripts: set[str]) -> int:
    penalty = 0
    own = {_script(c) if not c.isascii() else "latin" for c in word if _is_letter(c)}
    scripts.update(_script(c) for c in word if not c.isascii() and _is_letter(c))
    if len(own) > 1:
        penalty += _MIXED_SCRIPT_WORD
    pairs = itertools.pairwise(word)
    if any(a.islower() and b.isupper() and not (a + b).isascii() for a, b in pairs):
        penalty += _CASE_INSIDE_WORD
    if own == {"latin"} and len(word) > 1 and not any(c.isascii() for c in word):
        # "où", "Grüße" hold plain letters; "ÄúºÃ" is another alphabet's bytes.
        penalty += _ACCENTS_ONLY
    if word[0].lower() in _NO_WORD_STARTS_WITH:
        penalty += _IMPOSSIBLE_START  # "Ъсычьнёс" is Greek "Καλημέρα" read as cp1251
    return penalty


@functools.lru_cache(maxsize=4096)
def _script(character: str) -> str:
    name = unicodedata.name(character, "")
    if name.startswith("HANGUL LETTER "):
        return "jamo"
    return _SCRIPTS.get(name.split(" ", 1)[0], "other")


@functools.lru_cache(maxsize=4096)
def _is_letter(character: str) -> bool:
    """A letter of a known script: "º" and "µ" are letters to Unicode, symbols in a mojibake."""
    return unicodedata.category(character)[0] == "L" and (
        character.isascii() or _script(character) != "other"
    )


def _is_common_symbol(character: str) -> bool:
    return character in _COMMON_SYMBOLS or _script(character) == "cjk"


def has_kana(text: str) -> bool:
    """Whether ``text`` holds hiragana or katakana: Japanese, whatever codec produced it."""
    return _KANA.search(text) is not None


def russian_fit(text: str) -> float:
    """How much the Cyrillic of ``text`` looks like Russian; higher is better.

    The log frequency of each letter, less for what writing never does: a capital after a
    small letter in a word, a word starting with ь, ъ or ы, a symbol inside a word. Only the
    readings of the same bytes are compared, so they have the same number of letters.
    """
    fit = 0.0
    for word in _CYRILLIC_RUN.findall(text):
        lower = word.lower()
        fit += sum(math.log(_RUSSIAN_FREQUENCY.get(c, _OTHER_CYRILLIC)) for c in lower)
        if any(a.islower() and b.isupper() for a, b in itertools.pairwise(word)):
            fit -= _IMPOSSIBLE
        capitals = len(word) > 1 and word.isupper()
        if capitals:
            fit -= _ALL_CAPITALS
        fit -= _sound_penalty(lower, capitals)
    stray = sum(1 for c in text if not c.isascii() and not c.isalpha() and c not in "«»№")
    return fit - _IMPOSSIBLE * stray


def _sound_penalty(word: str, capitals: bool) -> float:
    """What Russian spelling rules out: ь, ъ or ы first, ь or ъ after a vowel, й after a
    consonant, a word of several letters without a vowel (in capitals, an abbreviation)."""
    penalty = _IMPOSSIBLE if word[0] in _NO_WORD_STARTS_WITH else 0.0
    for before, letter in itertools.pairwise(word):
        if letter in "ьъ" and before in _VOWELS:
            penalty += _IMPOSSIBLE
        elif letter == "й" and before not in _VOWELS:
            penalty += _UNLIKELY
    if len(word) > 1 and not any(c in _VOWELS for c in word):
        penalty += _UNLIKELY / 3 if capitals else _IMPOSSIBLE
    return penalty
