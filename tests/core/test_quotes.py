"""Stripping quoted history from replies, one hand-written sample per mail client style."""

from __future__ import annotations

import pytest

from mailsupport.core.commands import split_commands
from mailsupport.core.quotes import follow_up_text, strip_quoted

QUOTE = "> Hello, my printer is jammed.\n> \n> Jane\n"
ANSWER = "Done, it works now.\n\nBob"

STYLES = {
    "gmail": (
        f"{ANSWER}\n\nOn Wed, Mar 3, 2021 at 10:00 AM Jane Customer <jane@customer.example>"
        f" wrote:\n\n{QUOTE}"
    ),
    "gmail wrapped header": (
        f"{ANSWER}\n\nOn Wed, Mar 3, 2021 at 10:00 AM Jane Customer <\n"
        f"jane@customer.example> wrote:\n\n{QUOTE}"
    ),
    "outlook desktop": (
        f"{ANSWER}\n\nFrom: Jane Customer <jane@customer.example>\n"
        "Sent: Wednesday, March 3, 2021 10:00 AM\nTo: Support <support@example.com>\n"
        "Subject: Printer jammed\n\nHello, my printer is jammed.\n\nJane\n"
    ),
    "outlook original message": (
        f"{ANSWER}\n\n-----Original Message-----\nFrom: Jane Customer"
        " [mailto:jane@customer.example]\nSent: Wednesday, March 3, 2021 10:00 AM\n"
        "To: Support\nSubject: Printer jammed\n\nHello, my printer is jammed.\n"
    ),
    "outlook web": (
        f"{ANSWER}\r\n\r\n________________________________\r\n"
        "From: Jane Customer <jane@customer.example>\r\nSent: Wednesday, March 3, 2021 10:00\r\n"
        "To: support@example.com <support@example.com>\r\nSubject: Printer jammed\r\n\r\n"
        "Hello, my printer is jammed.\r\n"
    ),
    "apple mail": (
        f"{ANSWER}\n\n> On 3 Mar 2021, at 10:00, Jane Customer <jane@customer.example>"
        f" wrote:\n> \n{QUOTE}"
    ),
    "apple mail us": (
        f"{ANSWER}\n\nOn Mar 3, 2021, at 10:00 AM, Jane Customer <jane@customer.example>"
        f" wrote:\n\n{QUOTE}"
    ),
    "thunderbird": f"{ANSWER}\n\nOn 03.03.2021 10:00, Jane Customer wrote:\n{QUOTE}",
    "thunderbird old default": f"{ANSWER}\n\nJane Customer wrote:\n{QUOTE}",
    "thunderbird german": f"{ANSWER}\n\nAm 03.03.2021 um 10:00 schrieb Jane Customer:\n{QUOTE}",
    "gmail german": (
        f"{ANSWER}\n\nAm Mi., 3. März 2021 um 10:00 Uhr schrieb Jane Customer <\n"
        f"jane@customer.example>:\n\n{QUOTE}"
    ),
    "outlook german": (
        f"{ANSWER}\n\nVon: Jane Customer <jane@customer.example>\n"
        "Gesendet: Mittwoch, 3. März 2021 10:00\nAn: Support <support@example.com>\n"
        "Betreff: Drucker\n\nHallo\n"
    ),
    "thunderbird russian": f"{ANSWER}\n\n03.03.2021 10:00, Иван Петров пишет:\n{QUOTE}",
    "gmail russian": (
        f"{ANSWER}\n\nср, 3 мар. 2021 г. в 10:00, Иван Петров <ivan@customer.example>:\n\n{QUOTE}"
    ),
    "android russian": (
        f'{ANSWER}\n02.03.2021 14:20 пользователь "Иван" <\nivan@customer.example> написал:\n\n'
        f"{QUOTE}"
    ),
    "mail.ru": (
        f"{ANSWER}\n\nСреда, 3 марта 2021, 10:00 +03:00 от Иван Петров"
        f" <ivan@customer.example>:\n{QUOTE}"
    ),
    "mail.ru html rendered": (
        f"{ANSWER}\n\n\nСреда, 3 марта 2021, 10:00 +03:00 от Иван Петров"
        " <ivan@customer.example>:\n    Hello, my printer is jammed.\n"
    ),
    "yandex": f'{ANSWER}\n\n03.03.2021, 10:00, "Иван Петров" <ivan@customer.example>:\n{QUOTE}',
    "yandex without address": f"{ANSWER}\n\n03.03.2021, 10:00, Иван Петров:\n{QUOTE}",
    "outlook russian": (
        f"{ANSWER}\n\nОт: Иван Петров <ivan@customer.example>\n"
        "Отправлено: 3 марта 2021 г. 10:00\nКому: support@example.com\nТема: Принтер\n\n"
        "Здравствуйте\n"
    ),
    "quote without header": f"{ANSWER}\n\n{QUOTE}",
    "bottom posting": f"On 03.03.2021 10:00, Jane Customer wrote:\n{QUOTE}\n{ANSWER}\n",
}


@pytest.mark.parametrize("style", list(STYLES))
def test_client_style(style: str) -> None:
    assert strip_quoted(STYLES[style]) == ANSWER


def test_iphone_signature_is_kept() -> None:
    text = (
        "Done, it works now.\n\nSent from my iPhone\n\n> On 3 Mar 2021, at 10:00, Jane"
        f" <jane@customer.example> wrote:\n> \n{QUOTE}"
    )
    assert strip_quoted(text) == "Done, it works now.\n\nSent from my iPhone"


def test_operator_signature_is_kept_with_its_delimiter() -> None:
    text = (
        "Please restart it.\n\n-- \nBob, ACME support\n+1 555 0100\n\n"
        f"On Wed, Mar 3, 2021 at 10:00 AM Jane <jane@customer.example> wrote:\n{QUOTE}"
    )
    assert strip_quoted(text) == "Please restart it.\n\n-- \nBob, ACME support\n+1 555 0100"


def test_commands_at_the_top_then_quote() -> None:
    text = (
        "#status waiting\n#time 15m\n\nPlease restart the printer.\n\nBob\n\n"
        f"On Wed, Mar 3, 2021 at 10:00 AM Jane <jane@customer.example> wrote:\n{QUOTE}"
    )
    stripped = strip_quoted(text)
    block = split_commands(stripped)
    assert [command.name for command in block.commands] == ["status", "time"]
    assert block.body == "Please restart the printer.\n\nBob"


def test_inline_answers_keep_the_answers() -> None:
    text = "Jane wrote:\n> Is it fixed?\nYes.\n> When?\nToday at noon.\n"
    assert strip_quoted(text) == "Yes.\n\nToday at noon."


def test_list_footer_after_the_quote_is_dropped_when_written_above() -> None:
    text = f"{ANSWER}\n\nOn 03.03.2021, Jane wrote:\n{QUOTE}\n____________\nlist footer\n"
    assert strip_quoted(text) == ANSWER


def test_indentation_and_blank_lines_of_the_answer_are_kept() -> None:
    answer = "Steps:\n\n    1. open the tray\n    2. pull\n\n\nBob"
    text = f"{answer}\n\nOn Wed, Mar 3, 2021 at 10:00 AM Jane <jane@x.example> wrote:\n{QUOTE}"
    assert strip_quoted(text) == answer


@pytest.mark.parametrize(
    "text",
    [
        "We meet at 10:00 tomorrow, bring this:\n- the printer\n- the cable",
        "The window is open as follows:\nFrom: Monday\nTo: Friday\nThanks",
        "My colleague wrote:\nthe fix is deployed.",
        "Just text.\n\n-- \nBob",
        "On Monday we deploy.\nOn Tuesday we test.",
    ],
)
def test_prose_is_not_history(text: str) -> None:
    assert strip_quoted(text) == text


def test_only_history_gives_nothing() -> None:
    assert strip_quoted(f"On 03.03.2021 10:00, Jane wrote:\n{QUOTE}") == ""
    assert strip_quoted("") == ""


def test_html_is_used_when_there_is_no_text() -> None:
    html = (
        '<div dir="ltr">Done, it works now.</div><div class="gmail_quote">On Wed, Mar 3, 2021'
        " at 10:00 AM Jane &lt;jane@customer.example&gt; wrote:<br><blockquote>Hello, my"
        " printer is jammed.</blockquote></div>"
    )
    assert strip_quoted("", html) == "Done, it works now."
    assert strip_quoted("Plain answer.", html) == "Plain answer."


def test_very_long_mail_stays_fast() -> None:
    import time

    text = "a line of a pasted log 12:30:00 <x@y.example>\n" * 20000 + f"\nOn x wrote:\n{QUOTE}"
    started = time.perf_counter()
    strip_quoted(text)
    assert time.perf_counter() - started < 5


# --- a customer's follow-up ------------------------------------------------------------------


@pytest.mark.parametrize("style", list(STYLES))
def test_follow_up_keeps_only_the_new_text(style: str) -> None:
    assert follow_up_text(STYLES[style], subject="Re: [ACME #1] Printer jammed") == ANSWER


@pytest.mark.parametrize(
    "text",
    [
        f"On 03.03.2021 10:00, Jane wrote:\n{QUOTE}",
        f"{QUOTE}",
        "-----Original Message-----\nFrom: ACME Support [mailto:support@example.com]\n"
        "Sent: Monday, March 2, 2026 9:00 AM\nTo: Carol\nSubject: [ACME #1] Printer\n\nHello\n",
    ],
)
def test_follow_up_with_nothing_new_keeps_its_whole_text(text: str) -> None:
    assert follow_up_text(text) == text.strip()


def test_follow_up_answering_between_quotes_keeps_the_questions() -> None:
    text = "Jane wrote:\n> Which model is it?\nAn HP 4000.\n> Which floor?\nThe third.\n"
    assert follow_up_text(text) == text.strip()


FORWARDS = {
    "gmail": "---------- Forwarded message ---------\nFrom: Vendor <v@vendor.example>\n"
    "Date: Mon, 2 Mar 2026 at 08:00\nSubject: Drum\nTo: Carol <carol@customer.test>\n\n",
    "thunderbird": "-------- Forwarded Message --------\nSubject: \tDrum\n"
    "Date: \tMon, 2 Mar 2026 08:00:00 +0100\nFrom: \tVendor <v@vendor.example>\n\n",
    "apple mail": "Begin forwarded message:\n\nFrom: Vendor <v@vendor.example>\n"
    "Subject: Drum\nDate: 2 March 2026 at 08:00:00 CET\nTo: Carol <carol@customer.test>\n\n",
    "mail.ru": "-------- Пересылаемое сообщение --------\nОт кого: Vendor <v@vendor.example>\n"
    "Кому: carol@customer.test\nДата: Понедельник, 2 марта 2026, 8:00 +03:00\nТема: Drum\n\n",
}


@pytest.mark.parametrize("style", list(FORWARDS))
def test_forward_in_a_follow_up_is_kept(style: str) -> None:
    text = f"This is what the vendor says.\n\n{FORWARDS[style]}The drum ships on Friday.\n"
    assert follow_up_text(text, subject="Re: [ACME #1] Printer") == text.strip()


def test_outlook_forward_is_known_by_its_subject() -> None:
    text = (
        "See below.\n\n________________________________\nFrom: Vendor <v@vendor.example>\n"
        "Sent: Monday, March 2, 2026 8:00 AM\nTo: Carol\nSubject: Drum\n\nShips Friday.\n"
    )
    for subject in ("FW: [ACME #1] Drum", "[ACME #1] Fwd: Drum", "Re: [ACME #1] WG: Drum"):
        assert follow_up_text(text, subject=subject) == text.strip(), subject
    for subject in ("RE: [ACME #1] Printer", "Forward planning: Q3", "Fw-update"):
        assert follow_up_text(text, subject=subject) == "See below.", subject


def test_follow_up_in_html_only() -> None:
    html = (
        '<div dir="ltr">Still jammed.</div><div class="gmail_quote">On Mon, Mar 2, 2026 at'
        " 9:00 AM ACME Support &lt;support@example.com&gt; wrote:<br><blockquote>We have"
        " received your message.</blockquote></div>"
    )
    assert follow_up_text("", html) == "Still jammed."


def test_header_patterns_tried_at_line_starts_find_what_finditer_finds() -> None:
    """``line_matches`` tries only where a history header can begin; it must miss nothing."""
    import random

    from mailsupport.core.quotes import _LIBRARY_HEADERS, _RUSSIAN_BLOCK, line_matches

    pieces = [
        "On Mon, Mar 2 2026 at 9:00 Carol <c@x> wrote:",
        "On Mon, Mar 2 2026",
        "Carol Customer",
        "wrote:",
        "> quoted",
        "From: a",
        "Sent: b",
        "To: c",
        "Subject: d",
        "",
        "-----Original Message-----",
        "От: x",
        "Тема: y",
        "2026年3月2日 Carol 写道：",
        "hello world",
        "a: b",
    ]
    rnd = random.Random(7)
    for _ in range(3000):
        text = "\n".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 14)))
        for pattern in (_LIBRARY_HEADERS, _RUSSIAN_BLOCK):
            expected = [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
            assert [m.span() for m in line_matches(pattern, text)] == expected, text
