"""Turn bytes of declared, misdeclared or undeclared charsets into Unicode.

Real mail declares charsets Python does not know (``x-mac-cyrillic``, ``iso-8859-8-i``,
``ks_c_5601-1987``, typos such as ``uft-8``), declares one charset and sends another, or sends
raw 8-bit header bytes with no declaration at all. Everything here is pure and never raises on
bad input: the worst case is a lossy decode, reported as a defect string.
"""

from __future__ import annotations

import binascii
import codecs
import encodings
import functools
import pkgutil
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from encodings.aliases import aliases as python_aliases

from charset_normalizer import CharsetMatch, from_bytes

from mailsupport.core.plausible import UNREADABLE, has_kana, implausibility, russian_fit

# Keys are charset labels with everything but letters and digits removed, so "Shift_JIS",
# "shift-jis" and "SHIFT JIS" meet in one entry. Values favour the superset that the sending
# software really uses (Windows code pages for their ISO/legacy labels).
_ALIASES: dict[str, str] = {
    "utf8": "utf-8",
    "uft8": "utf-8",
    "utf": "utf-8",
    "utf8mb4": "utf-8",
    "unicode11utf7": "utf-7",
    "utf7": "utf-7",
    "ksc56011987": "cp949",
    "ksc56011989": "cp949",
    "ksc5601": "cp949",
    "euckr": "cp949",
    "cseuckr": "cp949",
    "xwindows949": "cp949",
    "windows949": "cp949",
    "uhc": "cp949",
    "gb2312": "gb18030",
    "gb231280": "gb18030",
    "csgb2312": "gb18030",
    "euccn": "gb18030",
    "xeuccn": "gb18030",
    "gbk": "gb18030",
    "xgbk": "gb18030",
    "cp936": "gb18030",
    "windows936": "gb18030",
    "chinese": "gb18030",
    "big5": "cp950",
    "csbig5": "cp950",
    "xxbig5": "cp950",
    "big5tw": "cp950",
    "shiftjis": "cp932",
    "sjis": "cp932",
    "xsjis": "cp932",
    "mskanji": "cp932",
    "csshiftjis": "cp932",
    "windows31j": "cp932",
    "xmscp932": "cp932",
    "iso2022jp": "iso2022_jp",
    "csiso2022jp": "iso2022_jp",
    "eucjp": "euc_jp",
    "xeucjp": "euc_jp",
    "xmaccyrillic": "mac_cyrillic",
    "xmacukrainian": "mac_cyrillic",
    "maccyrillic": "mac_cyrillic",
    "iso88598i": "iso8859_8",
    "iso88598e": "iso8859_8",
    "iso88596i": "iso8859_6",
    "iso88596e": "iso8859_6",
    "iso88591": "cp1252",
    "latin1": "cp1252",
    "l1": "cp1252",
    "cp819": "cp1252",
    "ibm819": "cp1252",
    "usascii": "ascii",
    "ascii": "ascii",
    "ansix341968": "ascii",
    "us": "ascii",
    "koi8": "koi8_r",
    "dos866": "cp866",
    "koi8ru": "koi8_u",  # KOI8-RU (Belarusian additions), unknown to Python; KOI8-U is closest
    "unicode11utf8": "utf-8",
    "tis620": "cp874",
    "windows874": "cp874",
}

# Tried in order when the declared codec rejects the bytes: what senders using that label
# really send (vendor extensions, JIS X 0213, the other Japanese encodings, UTF-8).
_ISO2022_JP_VARIANTS = ("iso2022_jp_ext", "iso2022_jp_2004", "cp50221")
_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "iso2022_jp": (*_ISO2022_JP_VARIANTS, "utf-8", "euc_jp", "cp932"),
    "euc_jp": ("euc_jis_2004", "cp932", "utf-8"),
    "cp932": ("shift_jis_2004", "euc_jp", "utf-8"),
    "cp950": ("big5hkscs", "utf-8"),
    "gb18030": ("utf-8",),
    "cp949": ("utf-8",),
    "ascii": ("utf-8", "cp1252"),
    "cp1252": ("latin-1",),
}

# Single-byte charsets accept any bytes, so UTF-8 sent under their label would silently turn
# into mojibake; valid UTF-8 with non-ASCII bytes is checked first (legacy text almost never is).
_SINGLE_BYTE_PREFIXES = ("cp12", "iso8859", "koi8", "mac-", "cp874", "tis-620", "latin")

# Labels meaning "we do not know": decode as if nothing was declared.
_UNKNOWN = frozenset({"unknown", "unknown8bit", "xunknown", "xuserdefined", "default", "none"})

# Codecs Python accepts that do not decode text the way a mail charset means: escape
# interpreters and IDNA would turn body bytes into something the sender never wrote.
_REFUSED = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
)

_WINDOWS_CODEPAGE = re.compile(r"(?:x)?(?:windows|win|cp|ms)(12[0-9]{2})")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]*")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _compact(label: str) -> str:
    return _NOT_ALNUM.sub("", label.lower())


def _python_codecs() -> dict[str, str]:
    """Python's own codec names and aliases, compacted like the keys of ``_ALIASES``.

    Python looks a label up with its separators, so "koi8r", "koi8u" and "iso88595" (as some
    mailers write them) are unknown to it, while "koi8_r" and "iso8859-5" are found. Its
    registry is the list of spellings kept up to date; only the separators are forgiven here.
    """
    names = [*python_aliases.items()]
    names += [(module.name, module.name) for module in pkgutil.iter_modules(encodings.__path__)]
    found: dict[str, str] = {}
    for name, codec in names:
        found.setdefault(_compact(name), codec)
    return found


_PYTHON_CODECS = _python_codecs()

# Non-ASCII characters, besides the one bad sequence, that make raw header bytes UTF-8.
_NEARLY_UTF8_GOOD = 4

# Replacement characters allowed, as a share of the decoded text, before a declared charset is
# judged wrong rather than the text merely damaged in a few places.
_DAMAGE_RATIO = 0.02

# Detection is unreliable on very short input (a word in a header): below this, a fixed
# Western fallback beats a guess. From here on, a Russian or Polish name is read better by
# detection than by cp1252, and no Western text tried came out worse.
_MIN_DETECT_BYTES = 8

# The charsets detection chooses from, the most used in mail first. Of all Python knows, a
# short Russian text fits Mac Cyrillic, EBCDIC or Thai about as well as cp1251, and
# charset-normalizer picked such readings: «дравствуйте! ” нас for "Здравствуйте! У нас".
# Among readings it finds equally good, the one earlier here wins. UTF-8 is not listed: it is
# always tried strictly before anything is detected.
_DETECTED = (
    "cp1252",
    "cp1251",
    "koi8_r",
    "cp1250",
    "iso8859_2",
    "koi8_u",
    "iso8859_15",
    "iso8859_5",
    "cp866",
    "cp1253",
    "iso8859_7",
    "cp1254",
    "iso8859_9",
    "cp1257",
    "iso8859_13",
    "cp1255",
    "iso8859_8",
    "cp1256",
    "cp874",
    "cp932",
    "euc_jp",
    "gb18030",
    "cp950",
    "big5hkscs",
    "cp949",
)
_COMMONNESS = {codec: rank for rank, codec in enumerate(_DETECTED)}
# The order raw header bytes are tried in after the mail's own charsets. Past the Western and
# Russian code pages come the multibyte ones, far more common in raw subjects than the other
# single-byte code pages, which accept nearly any bytes and would win ties with a right reading;
# detection's choice, then the rest of ``_DETECTED``.
# Korean comes before Chinese, EUC-JP before Big5: Korean and Japanese bytes always read as
# plausible Chinese, while Chinese bytes read as Korean mostly mix Hangul with Hanja in a word,
# and as EUC-JP mostly fail.
_MULTIBYTE = ("cp932", "cp949", "gb18030", "euc_jp", "cp950", "big5hkscs")
_FIRST_TRIED = ("cp1252", "cp1251", "koi8_r", *_MULTIBYTE)
_CHINESE = frozenset({"gb18030", "cp950", "big5hkscs"})
_RUSSIAN_CODE_PAGES = frozenset({"cp1251", "koi8_r"})
# Text short enough to judge letter by letter; detection decides longer text by itself.
_SHORT_TEXT = 500
# How much less implausible a later reading of a header must be to be taken instead.
_CLEARLY_BETTER = 2
# How much better (in log frequency) the other Russian code page's reading must be to take the
# place of the one the mail declares, and what cp1251 being the commoner one is worth.
_RUSSIAN_MARGIN = 2.0
_CP1251_COMMONER = 1.0
_WESTERN = frozenset({"cp1252", "iso8859_15"})
# charset-normalizer's own margins for readings it cannot tell apart (CharsetMatch.__lt__).
_SAME_CHAOS = 0.005
_SAME_COHERENCE = 0.02
# Words holding 8-bit bytes, and such a word with only bytes that are Russian letters in both
# cp1251 and KOI8-R.
_EIGHT_BIT_WORD = re.compile(rb"[A-Za-z\x80-\xff]*[\x80-\xff][A-Za-z\x80-\xff]*")
_CYRILLIC_WORD = re.compile(rb"[\xa3\xa8\xb3\xb8\xc0-\xff]+")

# Bounded so that a header full of unterminated words costs linear time, not quadratic.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?(.{0,4000}?)\?=", re.DOTALL)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BASE64_JUNK = re.compile(r"[^A-Za-z0-9+/]")


@dataclass(frozen=True)
class Decoded:
    """Decoded text, the codec that produced it and what went wrong, if anything."""

    text: str
    codec: str
    defect: str | None = None


@functools.lru_cache(maxsize=512)
def codec_for(charset: str | None) -> str | None:
    """The Python codec for a declared MIME charset, or None when it is unknown or unusable."""
    if not charset:
        return None
    match = _LABEL.search(charset.strip().strip("\"'"))
    if match is None:
        return None
    label = match.group().lower()
    compact = _compact(label)
    if compact in _UNKNOWN:
        return None
    name = _ALIASES.get(compact)
    if name is None:
        windows = _WINDOWS_CODEPAGE.fullmatch(compact)
        name = f"cp{windows.group(1)}" if windows else _PYTHON_CODECS.get(compact, label)
    return _usable_codec(name)


def _usable_codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # CodecInfo marks bytes-to-bytes codecs (base64, zlib...) as not text encodings.
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def decode_text(data: bytes, charset: str | None) -> Decoded:
    """Decode a body part declared with ``charset`` (None when nothing was declared)."""
    codec = codec_for(charset)
    if codec is None:
        return _decode_undeclared(data, charset)
    declared = charset or codec
    if codec.startswith(_SINGLE_BYTE_PREFIXES) and not data.isascii():
        text = _strict(data, "utf-8")
        if text is not None:
            return Decoded(text, "utf-8", f"text declared {declared!r} is UTF-8")
    for candidate in (codec, *_ALTERNATIVES.get(codec, ())):
        text = _strict(data, candidate)
        if text is not None:
            defect = (
                None if candidate == codec else f"text declared {declared!r} read as {candidate}"
            )
            return Decoded(text, candidate, defect)
    return _decode_damaged(data, codec, declared)


def _strict(data: bytes, codec: str) -> str | None:
    if codec == "cp50221":
        return _decode_cp50221(data)
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


_ISO2022_SWITCH = re.compile(rb"(\x1b(?:\(B|\(J|\(I|\$@|\$B))")


def _decode_cp50221(data: bytes) -> str | None:
    """ISO-2022-JP with the NEC and IBM rows Windows adds (①, №, ㈱), via Shift_JIS.

    Python's ISO-2022-JP codecs reject those rows, which Japanese office mail uses freely.
    """
    converted = bytearray()
    mode = b"\x1b(B"
    for chunk in _ISO2022_SWITCH.split(data):
        if _ISO2022_SWITCH.fullmatch(chunk):
            mode = chunk
        elif mode in (b"\x1b$B", b"\x1b$@"):
            if len(chunk) % 2 or b"\x1b" in chunk:
                return None
            for index in range(0, len(chunk), 2):
                converted += _jis_to_shift_jis(chunk[index], chunk[index + 1])
        elif mode == b"\x1b(I":
            converted += bytes(byte + 0x80 for byte in chunk)
        elif b"\x1b" in chunk:
            return None
        else:
            converted += chunk
    return _strict(bytes(converted), "cp932")


def _jis_to_shift_jis(first: int, second: int) -> bytes:
    lead = ((first + 1) >> 1) + (0x70 if first <= 0x5E else 0xB0)
    trail = second + (0x1F + (second >= 0x60) if first % 2 else 0x7E)
    return bytes((lead & 0xFF, trail & 0xFF))


def _decode_undeclared(data: bytes, charset: str | None) -> Decoded:
    if b"\x1b" in data:
        # ISO-2022-JP is 7-bit, so it would pass as ASCII below with its escapes left in.
        japanese = _decode_iso2022_jp(data)
        if japanese is not None:
            return Decoded(
                japanese.text, japanese.codec, f"undeclared text decoded as {japanese.codec}"
            )
    text = _strict(data, "utf-8")
    if text is not None:
        defect = None if charset is None or data.isascii() else f"unknown charset {charset!r}"
        return Decoded(text, "utf-8", defect and f"{defect}; decoded as utf-8")
    guess = _guess(data)
    label = "undeclared 8-bit text" if charset is None else f"unknown charset {charset!r}"
    return Decoded(guess.text, guess.codec, f"{label}; decoded as {guess.codec}")


def _decode_damaged(data: bytes, codec: str, declared: str) -> Decoded:
    lossy = data.decode(codec, "replace")
    damage = lossy.count("\ufffd")
    if damage <= max(1, int(len(lossy) * _DAMAGE_RATIO)):
        return Decoded(lossy, codec, f"{damage} invalid sequence(s) for charset {declared!r}")
    text = _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", f"text declared {declared!r} decoded as utf-8")
    guess = _guess(data)
    return Decoded(guess.text, guess.codec, f"text declared {declared!r} decoded as {guess.codec}")


def _guess(data: bytes) -> Decoded:
    """Detect the charset of undeclared or misdeclared bytes; a Western code page at worst."""
    detected = _detect(data) if len(data) >= _MIN_DETECT_BYTES else None
    if detected is None or detected.codec in _WESTERN:
        # Too few letters for detection to see what a Russian word is: "Re: Счет".
        codec = _short_cyrillic(data)
        if codec is not None:
            return Decoded(data.decode(codec), codec)
    if detected is not None:
        if detected.codec in _RUSSIAN_CODE_PAGES and len(data) <= _SHORT_TEXT:
            # Detection reads a few words in capitals ("ТЕСТ ЗАКАЗА") as cp1251 whatever they are.
            codec = _russian_code_page(data, detected.codec)
            return Decoded(data.decode(codec), codec) if codec != detected.codec else detected
        return detected
    text = _strict(data, "cp1252")
    if text is not None:
        return Decoded(text, "cp1252")
    return Decoded(data.decode("latin-1"), "latin-1")


def _short_cyrillic(data: bytes) -> str | None:
    """cp1251 or KOI8-R for a word or two too short to detect, such as a name "Иван".

    Both code pages put the Russian alphabet at 0xC0-0xFF (and ё near 0xA8/0xB8), where cp1252
    has accented Latin letters; a Western word holds those among plain letters ("Grüße",
    "café"), so words made of them alone are Cyrillic. cp1251 puts lower case in the upper
    half of that range and KOI8-R in the lower half; most letters of a text are lower case,
    which decides when the letters that come out (``_russian_code_page``) do not.
    """
    letters = _cyrillic_letters(data)
    if letters is None or len(letters) < 2:
        return None  # "à" alone is as likely
    upper_half = sum(byte >= 0xE0 for byte in letters)
    return _russian_code_page(data, "cp1251" if 2 * upper_half >= len(letters) else "koi8_r")


def _cyrillic_letters(data: bytes) -> bytes | None:
    """The 8-bit bytes of ``data`` when every word holding one is letters in both code pages."""
    words = _EIGHT_BIT_WORD.findall(data)
    if not words or not all(_CYRILLIC_WORD.fullmatch(word) for word in words):
        return None
    return b"".join(words)


def _russian_code_page(data: bytes, preferred: str, margin: float = 0.0) -> str:
    """``preferred`` (cp1251 or KOI8-R), or the other one when its reading is more Russian by
    more than ``margin``.

    The two put small and capital letters in swapped halves, so a word in capitals in one reads
    as small letters in the other: KOI8-R "ТЕСТ" is cp1251 "феуф". Which reading has the
    letters Russian uses, and no capital inside a word, tells them apart; cp1251, much the
    more used today, has the benefit of the doubt.
    """
    if _cyrillic_letters(data) is None:
        return preferred
    other = "koi8_r" if preferred == "cp1251" else "cp1251"
    mine, theirs = _russian_reading(data, preferred), _russian_reading(data, other)
    return other if theirs > mine + margin else preferred


def _russian_reading(data: bytes, codec: str) -> float:
    return russian_fit(data.decode(codec)) + (_CP1251_COMMONER if codec == "cp1251" else 0.0)


def _detect(data: bytes) -> Decoded | None:
    """charset-normalizer's reading among ``_DETECTED``; of equally good ones, the commonest."""
    matches = from_bytes(data, cp_isolation=list(_DETECTED))
    best = matches.best()
    if best is None:
        return None
    tied = [
        match
        for match in matches
        if abs(match.chaos - best.chaos) < _SAME_CHAOS
        and abs(match.coherence - best.coherence) <= _SAME_COHERENCE
    ]
    chosen = min(tied, key=_commonness)
    # Every charset a match could be from decodes the bytes to the same text.
    codec = min(chosen.could_be_from_charset, key=lambda c: _COMMONNESS.get(c, len(_DETECTED)))
    return Decoded(str(chosen), codec)


def _commonness(match: CharsetMatch) -> int:
    return min(_COMMONNESS.get(codec, len(_DETECTED)) for codec in match.could_be_from_charset)


def decode_raw_header(value: str, fallback: str | Sequence[str] | None = None) -> Decoded:
    """Recover raw 8-bit bytes in a header value parsed from bytes.

    The email package keeps non-ASCII header bytes as lone surrogates. They are read as UTF-8,
    else in the most plausible of ``fallback`` (the charsets the mail uses: its parts', its
    encoded words'), what detection finds and the charsets mail is most written in. Encoded
    words are left alone so address parsing still sees the structure the sender wrote.
    """
    if value.isascii():
        japanese = _decode_iso2022_jp(value.encode("ascii")) if "\x1b" in value else None
        return japanese or Decoded(value, "ascii")
    data = value.encode("utf-8", "surrogateescape")
    text = _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8")
    text = _nearly_utf8(data)
    if text is not None:
        return Decoded(text, "utf-8", "raw 8-bit header is UTF-8 with one invalid sequence")
    reading = _legacy_header(data, _mail_codecs(fallback))
    return Decoded(reading.text, reading.codec, f"raw 8-bit header decoded as {reading.codec}")


def _header_codecs(data: bytes, mail_codecs: list[str]) -> Iterator[str]:
    """The codecs to read raw header bytes in, in order, each once; detection (which costs
    more than all the rest) runs only when the readings before it were not good enough."""
    tried: set[str] = set()

    def fresh(codecs: Iterable[str]) -> Iterator[str]:
        for codec in codecs:
            if codec not in tried:
                tried.add(codec)
                yield codec

    yield from fresh((*mail_codecs, *_FIRST_TRIED))
    detected = _detect(data) if len(data) >= _MIN_DETECT_BYTES else None
    yield from fresh((*([detected.codec] if detected else []), *_DETECTED))


def _mail_codecs(charsets: str | Sequence[str] | None) -> list[str]:
    """The codecs of the charsets a mail uses, with what senders of each really send."""
    labels = [charsets] if isinstance(charsets, str) else list(charsets or ())
    found: dict[str, None] = {}
    for codec in filter(None, map(codec_for, labels)):
        found.update(dict.fromkeys((codec, *_ALTERNATIVES.get(codec, ()))))
    return [codec for codec in found if codec not in ("utf-8", "ascii")]


def _legacy_header(data: bytes, mail_codecs: list[str]) -> Decoded:
    """The most plausible reading of raw header bytes that are not UTF-8.

    A header has a few words, too few for detection alone, and a GB2312 subject in a mail whose
    text part is Latin-1 decodes as Latin-1 without error. So the charsets the mail itself uses
    are tried first, then those mail is most often written in (``_header_codecs``), and a later
    reading takes the place of an earlier one only when it is clearly more plausible
    (``implausibility``): "±5°C" stays Latin-1 rather than become Latin-2 "ą5°C".
    """
    best: Decoded | None = None
    best_penalty = UNREADABLE + _CLEARLY_BETTER
    for codec in _header_codecs(data, mail_codecs):
        text = _strict(data, codec)
        if text is None:
            continue
        penalty = implausibility(text[:_SHORT_TEXT])
        if codec in _CHINESE and has_kana(text):
            penalty += 2  # Japanese sent as EUC-JP: kana sit at the same places in GB2312
        if penalty <= best_penalty - _CLEARLY_BETTER:
            best, best_penalty = Decoded(text, codec), penalty
        if best_penalty < _CLEARLY_BETTER:
            break  # nothing later could take its place
    if best is None:
        return Decoded(data.decode("latin-1"), "latin-1")
    if best.codec in _RUSSIAN_CODE_PAGES:
        # The mail's own code page is kept unless the other one reads clearly better.
        margin = _RUSSIAN_MARGIN if best.codec in mail_codecs else 0.0
        codec = _russian_code_page(data[:_SHORT_TEXT], best.codec, margin)
        return Decoded(data.decode(codec), codec)
    return best


def _nearly_utf8(data: bytes) -> str | None:
    """UTF-8 but for one bad sequence: a value cut short inside a character, as Yahoo does.

    Text in a legacy charset breaks UTF-8 at nearly every non-ASCII byte, so one bad sequence
    among several good characters is UTF-8 damaged, not another charset.
    """
    text = data.decode("utf-8", "replace")
    damage = text.count("\ufffd")
    good = sum(1 for character in text if ord(character) > 0x7F) - damage
    return text if damage == 1 and good >= _NEARLY_UTF8_GOOD else None


def _decode_iso2022_jp(data: bytes) -> Decoded | None:
    """Japanese mailers send raw ISO-2022-JP, a 7-bit encoding, undeclared and in headers."""
    for codec in ("iso2022_jp", *_ISO2022_JP_VARIANTS):
        text = _strict(data, codec)
        if text is not None:
            return Decoded(text, codec)
    return None


def decode_encoded_words(value: str) -> Decoded:
    """Decode RFC 2047 encoded words, forgiving what real mailers get wrong.

    Words glued to text, spaces inside Q words, missing base64 padding and multibyte
    characters split across adjacent words are all accepted. Whitespace between adjacent
    encoded words is dropped, as the RFC asks.
    """
    if "=?" not in value:
        return Decoded(value, "ascii")
    out: list[str] = []
    defects: list[str] = []
    pending: tuple[str, bytearray] | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        position = match.end()
        charset = match.group(1).split("*", 1)[0]
        data = _word_bytes(match.group(2), match.group(3))
        adjacent = pending is not None and not gap.strip()
        if pending is not None and adjacent and pending[0].lower() == charset.lower():
            pending[1].extend(data)
            continue
        if pending is not None:
            out.append(_flush(pending, defects))
        if not adjacent:
            out.append(gap)
        pending = (charset, bytearray(data))
    if pending is not None:
        out.append(_flush(pending, defects))
    out.append(value[position:])
    return Decoded("".join(out), "rfc2047", "; ".join(defects) or None)


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    cleaned = _BASE64_JUNK.sub("", text)
    if len(cleaned) % 4 == 1:
        # A lone trailing character carries no whole byte; every lenient decoder drops it.
        cleaned = cleaned[:-1]
    try:
        return binascii.a2b_base64(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error:
        return raw


def _flush(pending: tuple[str, bytearray], defects: list[str]) -> str:
    decoded = decode_text(bytes(pending[1]), pending[0])
    if decoded.defect:
        defects.append(f"encoded word: {decoded.defect}")
    return decoded.text


def decode_header(value: str, fallback: str | Sequence[str] | None = None) -> Decoded:
    """A header value as display text: raw bytes and encoded words decoded, unfolded.

    Line breaks and control characters never survive, so the text is safe to put back into
    an outgoing header.
    """
    raw = decode_raw_header(value, fallback)
    words = decode_encoded_words(_FOLD.sub("", raw.text))
    text = _CONTROLS.sub(_control_replacement, words.text)
    defect = "; ".join(d for d in (raw.defect, words.defect) if d) or None
    return Decoded(text.strip(), raw.codec, defect)


def _control_replacement(match: re.Match[str]) -> str:
    return " " if match.group() in "\r\n" else ""
