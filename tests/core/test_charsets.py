"""Charset labels, body decoding and header words as real mailers send them."""

from __future__ import annotations

import random

import pytest

from mailsupport.core.charsets import (
    codec_for,
    decode_encoded_words,
    decode_header,
    decode_raw_header,
    decode_text,
)

RUSSIAN = "Здравствуйте! Принтер на третьем этаже не печатает, ошибка 0x51."
JAPANESE = "お世話になっております。プリンターが動きません。"
CHINESE_SIMPLIFIED = "您好，三楼的打印机无法打印，请帮忙处理。"
CHINESE_TRADITIONAL = "您好，三樓的印表機無法列印，請幫忙處理。"
KOREAN = "안녕하세요. 3층 프린터가 작동하지 않습니다."
HEBREW = "שלום, המדפסת בקומה השלישית לא עובדת."
POLISH = "Dzień dobry, drukarka na trzecim piętrze nie działa."
GREEK = "Καλημέρα, ο εκτυπωτής δεν λειτουργεί."
TURKISH = "Merhaba, üçüncü kattaki yazıcı çalışmıyor."
ARABIC = "مرحبا، الطابعة في الطابق الثالث لا تعمل."
LITHUANIAN = "Laba diena, spausdintuvas trečiame aukšte neveikia."
FRENCH = "Bonjour, l’imprimante du 3ᵉ étage ne fonctionne pas — merci."


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("utf-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ("utf8", "utf-8"),
        ("uft-8", "utf-8"),
        ('"utf-8"', "utf-8"),
        ("utf-8**", "utf-8"),
        ("unicode-1-1-utf-7", "utf-7"),
        ("ks_c_5601-1987", "cp949"),
        ("euc-kr", "cp949"),
        ("gb2312", "gb18030"),
        ("GBK", "gb18030"),
        ("big5", "cp950"),
        ("Shift_JIS", "cp932"),
        ("x-sjis", "cp932"),
        ("iso-2022-jp", "iso2022_jp"),
        ("x-mac-cyrillic", "mac-cyrillic"),
        ("iso-8859-8-i", "iso8859-8"),
        ("windows-1251", "cp1251"),
        ("win-1251", "cp1251"),
        ("x-cp1250", "cp1250"),
        ("koi8-r", "koi8-r"),
        ("iso-8859-1", "cp1252"),
        ("us-ascii", "ascii"),
        ("iso-8859-15", "iso8859-15"),
        # Misspellings seen in Russian and Ukrainian mail: separators dropped or added.
        ("koi8r", "koi8-r"),
        ("KOI8R", "koi8-r"),
        ("koi8u", "koi8-u"),
        ("KOI8-RU", "koi8-u"),
        ("cp-1251", "cp1251"),
        ("win-1251", "cp1251"),
        ("windows1251", "cp1251"),
        ("iso88595", "iso8859-5"),
        ("ISO8859-5", "iso8859-5"),
        ("iso885915", "iso8859-15"),
        ("UTF8", "utf-8"),
        ("cp-866", "cp866"),
        ("dos-866", "cp866"),
    ],
)
def test_declared_labels_map_to_python_codecs(label: str, codec: str) -> None:
    assert codec_for(label) == codec


@pytest.mark.parametrize(
    "label",
    [
        None,
        "",
        "x-unknown",
        "unknown-8bit",
        "iso-",
        "base64",
        "rot13",
        "undefined",
        "unicode_escape",
        "idna",
        "no-such-charset",
    ],
)
def test_unknown_or_unusable_labels_give_none(label: str | None) -> None:
    assert codec_for(label) is None


@pytest.mark.parametrize(
    ("label", "text", "encoding"),
    [
        ("windows-1251", RUSSIAN, "cp1251"),
        ("koi8-r", RUSSIAN, "koi8_r"),
        ("x-mac-cyrillic", RUSSIAN, "mac_cyrillic"),
        ("iso-2022-jp", JAPANESE, "iso2022_jp"),
        ("shift_jis", JAPANESE, "shift_jis"),
        ("euc-jp", JAPANESE, "euc_jp"),
        ("big5", CHINESE_TRADITIONAL, "big5"),
        ("gb2312", CHINESE_SIMPLIFIED, "gb2312"),
        ("euc-kr", KOREAN, "euc_kr"),
        ("ks_c_5601-1987", KOREAN, "cp949"),
        ("iso-8859-8-i", HEBREW, "iso8859_8"),
        ("utf8", RUSSIAN + JAPANESE, "utf-8"),
        ("unicode-1-1-utf-7", RUSSIAN, "utf-7"),
        ("utf-7", JAPANESE, "utf-7"),
        ("windows-1250", POLISH, "cp1250"),
        ("windows-1252", FRENCH.replace("ᵉ", "e"), "cp1252"),
        ("windows-1253", GREEK, "cp1253"),
        ("windows-1254", TURKISH, "cp1254"),
        ("windows-1255", HEBREW, "cp1255"),
        ("windows-1256", ARABIC, "cp1256"),
        ("windows-1257", LITHUANIAN, "cp1257"),
    ],
)
def test_legacy_charsets_decode_to_the_original_text(label: str, text: str, encoding: str) -> None:
    decoded = decode_text(text.encode(encoding), label)
    assert decoded.text == text
    assert decoded.defect is None


SHORT_RUSSIAN = "Привет, как дела?"
UKRAINIAN = "Доброго дня! Принтер на третьому поверсі не друкує, будь ласка, допоможіть."


@pytest.mark.parametrize(
    ("label", "text", "encoding"),
    [
        ("koi8r", SHORT_RUSSIAN, "koi8_r"),
        ("KOI8R", RUSSIAN, "koi8_r"),
        ("koi8u", UKRAINIAN, "koi8_u"),
        ("cp-1251", SHORT_RUSSIAN, "cp1251"),
        ("win1251", UKRAINIAN, "cp1251"),
        ("iso88595", RUSSIAN, "iso8859_5"),
    ],
)
def test_misspelled_labels_decode_without_guessing(label: str, text: str, encoding: str) -> None:
    decoded = decode_text(text.encode(encoding), label)
    assert (decoded.text, decoded.defect) == (text, None)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        # charset-normalizer alone read this one as Mac Cyrillic: «дравствуйте! ” нас ...
        ("Здравствуйте! У нас не работает принтер на третьем этаже. Спасибо.", "cp1251"),
        ("Здравствуйте!\nУ нас не печатает принтер, помогите пожалуйста.", "cp1251"),
        # ... and this one as Thai.
        ("Здравствуйте! У нас сломался принтер.", "koi8_r"),
        (RUSSIAN, "koi8_r"),
        ("Дякую за відповідь, все працює.", "koi8_u"),
        (UKRAINIAN, "koi8_u"),
        ("Заявка на ремонт", "cp1251"),
        ("Мария Иванова", "koi8_r"),
    ],
)
def test_undeclared_cyrillic_is_detected(text: str, encoding: str) -> None:
    decoded = decode_text(text.encode(encoding), None)
    assert decoded.text == text
    assert decoded.codec == encoding


@pytest.mark.parametrize(
    "text",
    [
        "„Test“",
        "Brand™",
        "±5°C",
        "Größe ändern",
        "Bitte um Rückruf wegen Störung",
        "Réunion à déplacer",
    ],
)
def test_undeclared_western_text_stays_western(text: str) -> None:
    assert decode_text(text.encode("cp1252"), None).text == text


@pytest.mark.parametrize("codec", ["cp1251", "koi8_r"])
@pytest.mark.parametrize("text", ["Иван", "Счет", "Я тут", "Пётр", "Re: Счет", "Заказ 15"])
def test_short_undeclared_russian_is_read_in_either_code_page(codec: str, text: str) -> None:
    # Too short for detection: before, these came out as cp1252 ("Ñ÷åò" for "Счет").
    assert decode_text(text.encode(codec), None).text == text
    raw = text.encode(codec).decode("ascii", "surrogateescape")
    assert decode_raw_header(raw).text == text


@pytest.mark.parametrize("text", ["à", "où", "Ça va", "Øl", "Müller", "café", "±5°C", "Größe"])
def test_short_undeclared_western_text_stays_western(text: str) -> None:
    assert decode_text(text.encode("cp1252"), None).text == text


def test_raw_8bit_cyrillic_header_without_any_charset_is_detected() -> None:
    raw = "Иван Петров".encode("cp1251").decode("ascii", "surrogateescape")
    assert decode_raw_header(raw).text == "Иван Петров"


def test_iso_2022_jp_with_windows_extensions_decodes() -> None:
    # ①, ② and № live in the NEC rows Windows adds to ISO-2022-JP (CP50221).
    raw = b'\x1b$B-!-"\x1b(B No. \x1b$B-b\x1b(B 41'
    decoded = decode_text(raw, "iso-2022-jp")
    assert decoded.text == "①② No. № 41"
    assert decoded.defect is not None


def test_euc_jp_sent_as_iso_2022_jp_is_still_read() -> None:
    decoded = decode_text(JAPANESE.encode("euc_jp"), "iso-2022-jp")
    assert decoded.text == JAPANESE
    assert "euc_jp" in (decoded.defect or "")


def test_utf8_sent_under_a_single_byte_label_is_not_turned_into_mojibake() -> None:
    decoded = decode_text("Grüße, Mañana".encode(), "iso-8859-1")
    assert decoded.text == "Grüße, Mañana"
    assert decoded.defect is not None


def test_undeclared_iso_2022_jp_is_recognised_by_its_escapes() -> None:
    decoded = decode_text(JAPANESE.encode("iso2022_jp"), None)
    assert decoded.text == JAPANESE


def test_undeclared_ascii_and_utf8_need_no_defect() -> None:
    assert decode_text(b"plain words", None) == decode_text(b"plain words", "x-unknown")
    assert decode_text("Größe".encode(), None).text == "Größe"
    assert decode_text("Größe".encode(), None).defect is None


def test_unknown_charset_is_detected_and_reported() -> None:
    text = " ".join([RUSSIAN] * 4)
    decoded = decode_text(text.encode("cp1251"), "x-no-such-charset")
    assert decoded.text == text
    assert "x-no-such-charset" in (decoded.defect or "")


def test_a_few_damaged_bytes_keep_the_declared_charset() -> None:
    data = ("Привет, " * 40).encode() + b"\xff" + " пока".encode()
    decoded = decode_text(data, "utf-8")
    assert decoded.text.count("\ufffd") == 1
    assert decoded.text.startswith("Привет") and decoded.text.endswith("пока")
    assert decoded.defect is not None


def test_wrongly_declared_charset_falls_back_to_detection() -> None:
    text = " ".join([RUSSIAN] * 4)
    decoded = decode_text(text.encode("cp1251"), "utf-8")
    assert decoded.text == text
    assert decoded.defect is not None


@pytest.mark.parametrize(
    "label", [None, "utf-8", "iso-2022-jp", "utf-7", "x-foo", "gb2312", "ascii"]
)
def test_arbitrary_bytes_never_raise(label: str | None) -> None:
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
        assert isinstance(decode_text(data, label).text, str)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?utf-8?B?0J/RgNC40LLQtdGC?=", "Привет"),
        ("=?koi8-r?Q?=F0=D2=C9=D7=C5=D4?= world", "Привет world"),
        ("=?UTF-8?Q?Caf=C3=A9_au_lait?=", "Café au lait"),
        ("=?iso-2022-jp?B?GyRCJEskYyRzJDMbKEI=?=", "にゃんこ"),
        ("=?ks_c_5601-1987?B?u+fB+C5KUEc=?=", "사진.JPG"),
        ("=?iso-8859-8-i?B?+ezl7Q==?=", "שלום"),
        ("=?windows-1251?B?z/Du4uXw6uA=?=", "Проверка"),
        # Adjacent words: the whitespace between them disappears.
        ("=?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),
        # A multibyte character split across two words.
        ("=?utf-8?B?0J8=?= =?utf-8?B?0YA=?=", "Пр"),
        ("=?utf-8?B?0J/RgNC4?=\r\n =?utf-8?B?0LLQtdGC?=", "Привет"),
        # Missing padding, glued to text, spaces inside a Q word, a language tag.
        ("=?utf-8?B?0JTQsA?=", "Да"),
        ("Re:=?utf-8?Q?=D0=94=D0=B0?=!", "Re:Да!"),
        ("=?utf-8?Q?hello world?=", "hello world"),
        ("=?utf-8*en?Q?hi?=", "hi"),
        ("no words at all", "no words at all"),
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
    ],
)
def test_encoded_words(value: str, expected: str) -> None:
    assert decode_header(value).text == expected


def test_encoded_word_in_an_unknown_charset_is_still_decoded() -> None:
    decoded = decode_encoded_words("=?none?Q?Caf=C3=A9?=")
    assert decoded.text == "Café"


def test_raw_8bit_header_is_read_as_utf8_first() -> None:
    raw = "Счёт".encode().decode("ascii", "surrogateescape")
    assert decode_raw_header(raw).text == "Счёт"


def test_raw_8bit_header_uses_the_body_charset_next() -> None:
    raw = "Счёт на оплату".encode("cp1251").decode("ascii", "surrogateescape")
    decoded = decode_raw_header(raw, "windows-1251")
    assert decoded.text == "Счёт на оплату"
    assert decoded.defect is not None


def test_raw_utf8_header_cut_inside_a_character_is_still_utf8() -> None:
    raw = "Счёт на оплату".encode()[:-1].decode("ascii", "surrogateescape")
    decoded = decode_raw_header(raw, "windows-1251")
    assert decoded.text == "Счёт на оплат\ufffd"
    assert decoded.defect == "raw 8-bit header is UTF-8 with one invalid sequence"


def test_raw_legacy_header_with_valid_utf8_pairs_is_not_taken_for_utf8() -> None:
    # "Ѕ" and "Ќ" in cp1251 are 0xBD and 0x8D: after "Р" (0xD0) each makes a valid UTF-8 pair.
    raw = "РЅ РЌ Счёт".encode("cp1251").decode("ascii", "surrogateescape")
    assert decode_raw_header(raw, "windows-1251").text == "РЅ РЌ Счёт"


def test_raw_iso_2022_jp_header_is_decoded() -> None:
    raw = "テスト".encode("iso2022_jp").decode("ascii")
    assert decode_header(raw).text == "テスト"


def test_decoded_headers_cannot_carry_line_breaks() -> None:
    # An encoded CR LF must not survive into a value that may be reused in a header.
    decoded = decode_header("=?utf-8?Q?Hello=0D=0ABcc:_victim@example.com?=")
    assert "\r" not in decoded.text and "\n" not in decoded.text
    assert decode_header("a\x00b\x07c").text == "abc"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("您好，打印机坏了", "gb2312"),
        ("回复：打印机问题", "gb2312"),
        ("打印机", "gb2312"),
        ("プリンターが動きません", "shift_jis"),
        ("会議", "shift_jis"),
        ("見積書の送付", "shift_jis"),
        ("안녕하세요 프린터", "euc_kr"),
    ],
)
def test_raw_cjk_header_in_a_latin1_mail_is_not_read_as_latin1(text: str, encoding: str) -> None:
    # Before, the text part's iso-8859-1 decoded these bytes without error: "ÄúºÃ£¬´òÓ¡".
    raw = text.encode(encoding).decode("ascii", "surrogateescape")
    assert decode_raw_header(raw, "iso-8859-1").text == text
    assert decode_raw_header(raw).text == text


def test_raw_header_is_read_in_whichever_charset_of_the_mail_fits() -> None:
    raw = "您好，打印机坏了".encode("gb2312").decode("ascii", "surrogateescape")
    decoded = decode_raw_header(raw, ("iso-8859-1", "gb2312"))
    assert (decoded.text, decoded.codec) == ("您好，打印机坏了", "gb18030")


@pytest.mark.parametrize(
    "text", ["Größe ändern", "Réunion à déplacer", "±5°C", "„Test“", "Brand™", "ÉTÉ 2024", "à"]
)
def test_raw_western_header_keeps_the_western_charset_of_the_mail(text: str) -> None:
    raw = text.encode("cp1252").decode("ascii", "surrogateescape")
    assert decode_raw_header(raw, "iso-8859-1").text == text
    assert decode_raw_header(raw).text == text


@pytest.mark.parametrize("codec", ["koi8_r", "cp1251"])
@pytest.mark.parametrize("text", ["ТЕСТ", "СЧЕТ", "ВАЖНО: ОПЛАТА", "ТЕСТ заказа", "счет"])
def test_cyrillic_in_capitals_is_told_apart_by_its_letters(codec: str, text: str) -> None:
    # KOI8-R puts capitals where cp1251 has small letters: "ТЕСТ" read as cp1251 is "феуф".
    data = text.encode(codec)
    assert decode_text(data, None).text == text
    raw = data.decode("ascii", "surrogateescape")
    assert decode_raw_header(raw).text == text
    assert decode_raw_header(raw, "iso-8859-1").text == text


def test_a_koi8_r_word_in_capitals_beats_a_cp1251_mail_charset_that_makes_nonsense() -> None:
    raw = "ТЕСТ".encode("koi8_r").decode("ascii", "surrogateescape")
    assert decode_raw_header(raw, "windows-1251").text == "ТЕСТ"
    # ... but not a word that reads well in the mail's own charset.
    raw = "Счет".encode("cp1251").decode("ascii", "surrogateescape")
    assert decode_raw_header(raw, "windows-1251").text == "Счет"
