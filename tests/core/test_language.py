"""Telling a customer's language from the letters of their mail."""

from __future__ import annotations

import pytest

from mailsupport.core.language import detect_language

SHIPPED = ("en", "ru")


@pytest.mark.parametrize(
    "text",
    [
        "Здравствуйте! Принтер на третьем этаже снова не печатает.",
        "Спасибо",
        "Не открывается PDF из SharePoint после обновления Windows 11",
        "Принтер\nДобрый день, ошибка 0x800F0922 при установке KB5034441.\n\n"
        "Best regards,\nIvan Petrov\nACME LLC",
        "Ёлка не горит, ЖЁЛТЫЙ индикатор",
        "Нужна доставка в Київ до пятницы, склад на Крещатике закрыт, адрес в приложении.",
    ],
)
def test_russian(text: str) -> None:
    assert detect_language(text, SHIPPED) == "ru"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12345 !!! ---",
        "The printer on floor 3 is jammed again.",
        "Der Drucker im dritten Stock ist wieder blockiert.",
        "Hello, the printer is jammed.\n\nBest regards,\nИван Петров, Sales Manager, ACME Ltd",
        "Please translate the error, our staff cannot read it: Ошибка",
    ],
)
def test_latin_text_leaves_the_language_unknown(text: str) -> None:
    assert detect_language(text, SHIPPED) is None


def test_other_cyrillic_languages_are_not_russian() -> None:
    ukrainian = "Доброго дня! Принтер на третьому поверсі знову не друкує, і сканер теж."
    belarusian = "Добры дзень! Прынтар на трэцім паверсе зноў не друкуе."
    serbian = "Здраво, штампач на трећем спрату поново не ради, љубазно молим помоћ."
    assert detect_language(ukrainian, SHIPPED) is None
    assert detect_language(belarusian, SHIPPED) is None
    assert detect_language(serbian, SHIPPED) is None
    assert detect_language(ukrainian, (*SHIPPED, "uk")) == "uk"
    assert detect_language(belarusian, (*SHIPPED, "be", "uk")) == "be"
    assert detect_language(serbian, (*SHIPPED, "sr")) is None  # not told apart here


def test_only_an_available_language_is_given() -> None:
    assert detect_language("Принтер не печатает", ("en",)) is None


def test_the_share_of_cyrillic_letters_decides() -> None:
    # 3 Cyrillic letters of 10, then 3 of 11.
    assert detect_language("Это abcdefg", SHIPPED) == "ru"
    assert detect_language("Это abcdefgh", SHIPPED) is None
