from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from mailsupport.core.message import Address
from mailsupport.core.outmail import OutgoingMail, build_message
from mailsupport.core.render import RenderError, Templates, default_template_dir

REPOSITORY = Path(__file__).resolve().parents[2]
NOTICES = ("acknowledgement", "status_open", "status_waiting", "status_resolved", "status_closed")


def context(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ticket": {
            "number": 1042,
            "subject": "Printer on floor 3 is jammed",
            "status": "open",
            "priority": "normal",
            "queue": "support",
        },
        "support_name": "ACME Support",
        "support_address": "support@example.com",
        "tag": "ACME",
        "contact_name": "Alice",
        "old_status": "new",
        "new_status": "open",
    }
    values.update(changes)
    return values


def with_subject(subject: str) -> dict[str, Any]:
    values = context()
    return context(ticket={**values["ticket"], "subject": subject})


def write(root: Path, language: str, files: dict[str, str]) -> None:
    folder = root / language
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_shipped_templates_come_from_the_checkout() -> None:
    assert default_template_dir() == REPOSITORY / "templates"
    assert Templates().languages() == ("en", "ru")


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("name", NOTICES)
def test_every_notice_renders_in_both_languages(name: str, language: str) -> None:
    rendered = Templates().render(name, language, context())
    assert "Printer on floor 3 is jammed" in rendered.subject
    assert "\n" not in rendered.subject
    assert "ACME #1042" in rendered.text
    assert "Alice" in rendered.text
    assert "ACME Support" in rendered.text
    assert rendered.text.endswith("\n") and not rendered.text.endswith("\n\n")
    assert rendered.html is None
    english = Templates().render(name, "en", context())
    if language == "ru":
        assert any("а" <= ch <= "я" for ch in rendered.text)
        assert rendered.text != english.text
    else:
        assert rendered.text.replace("Printer on floor 3 is jammed", "").isascii()


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("name", NOTICES)
def test_notices_read_well_without_a_contact_name(name: str, language: str) -> None:
    text = Templates().render(name, language, context(contact_name="")).text
    first_line = text.split("\n", 1)[0]
    assert first_line in ("Hello,", "Здравствуйте!")


def test_acknowledgement_says_how_to_continue_the_ticket() -> None:
    english = Templates().render("acknowledgement", "en", context()).text
    russian = Templates().render("acknowledgement", "ru", context()).text
    assert "[ACME #1042]" in english and "reply" in english
    assert "[ACME #1042]" in russian and "ответьте" in russian


@pytest.mark.parametrize(
    ("language", "reopens", "closing"),
    [
        ("en", "your reply reopens the request", "close"),
        ("ru", "ваш ответ снова откроет", "закрыт"),
    ],
)
def test_resolved_promises_no_closing_that_nothing_does(
    language: str, reopens: str, closing: str
) -> None:
    text = Templates().render("status_resolved", language, context()).text
    assert reopens in text
    assert closing not in text


def test_resolved_mentions_the_auto_close_period_when_known() -> None:
    templates = Templates()
    assert "within" not in templates.render("status_resolved", "en", context()).text
    assert (
        "within 1 day "
        in templates.render("status_resolved", "en", context(auto_close_days=1)).text
    )
    assert (
        "within 7 days "
        in templates.render("status_resolved", "en", context(auto_close_days=7)).text
    )
    for days, words in [(1, "1 дня"), (3, "3 дней"), (11, "11 дней"), (21, "21 дня")]:
        text = templates.render("status_resolved", "ru", context(auto_close_days=days)).text
        assert f"в течение {words}," in text


def test_missing_translation_falls_back_to_english(tmp_path: Path) -> None:
    write(tmp_path, "en", {"reminder.subject.j2": "Reminder", "reminder.txt.j2": "{{ language }}"})
    rendered = Templates(tmp_path).render("reminder", "ru", context())
    assert rendered == type(rendered)(subject="Reminder", text="en\n", html=None)


def test_override_replaces_a_single_file(tmp_path: Path) -> None:
    write(tmp_path, "ru", {"acknowledgement.subject.j2": "Заявка принята: {{ ticket.subject }}"})
    shipped = Templates().render("acknowledgement", "ru", context())
    overridden = Templates(tmp_path).render("acknowledgement", "ru", context())
    assert overridden.subject == "Заявка принята: Printer on floor 3 is jammed"
    assert overridden.text == shipped.text
    assert Templates(tmp_path).render("acknowledgement", "en", context()) == Templates().render(
        "acknowledgement", "en", context()
    )


def test_override_dir_may_add_a_language(tmp_path: Path) -> None:
    write(tmp_path, "de", {"status_open.txt.j2": "Wir arbeiten an {{ tag }} #{{ ticket.number }}."})
    templates = Templates(tmp_path)
    assert templates.languages() == ("de", "en", "ru")
    rendered = templates.render("status_open", "de", context())
    assert rendered.text == "Wir arbeiten an ACME #1042.\n"
    assert rendered.subject == "In progress: Printer on floor 3 is jammed"  # English subject


def test_html_is_autoescaped_and_text_is_not(tmp_path: Path) -> None:
    write(
        tmp_path,
        "en",
        {
            "note.subject.j2": "Re: {{ ticket.subject }}",
            "note.txt.j2": "{{ ticket.subject }}",
            "note.html.j2": '<p lang="{{ language }}">{{ ticket.subject }}</p>',
        },
    )
    hostile = "<script>alert(1)</script> & more"
    rendered = Templates(tmp_path).render("note", "en", with_subject(hostile))
    assert rendered.subject == f"Re: {hostile}"
    assert rendered.text == f"{hostile}\n"
    assert rendered.html == '<p lang="en">&lt;script&gt;alert(1)&lt;/script&gt; &amp; more</p>'


def test_html_only_from_the_language_of_the_text(tmp_path: Path) -> None:
    write(tmp_path, "en", {"acknowledgement.html.j2": "<p>{{ ticket.number }}</p>"})
    templates = Templates(tmp_path)
    assert templates.render("acknowledgement", "en", context()).html == "<p>1042</p>"
    assert templates.render("acknowledgement", "ru", context()).html is None


def test_subject_stays_one_line() -> None:
    hostile = "Printer\r\nBcc: victim@evil.test\n\u2028jammed\x00  again"
    rendered = Templates().render("status_open", "en", with_subject(hostile))
    assert rendered.subject == "In progress: Printer Bcc: victim@evil.test jammed again"


def test_subject_template_spanning_lines_is_joined(tmp_path: Path) -> None:
    write(tmp_path, "en", {"multi.subject.j2": "First\n{{ tag }}\n", "multi.txt.j2": "x"})
    assert Templates(tmp_path).render("multi", "en", context()).subject == "First ACME"


def test_undefined_variable_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "en", {"typo.subject.j2": "x", "typo.txt.j2": "{{ ticket.numbr }}"})
    with pytest.raises(RenderError, match=r"en/typo\.txt\.j2") as raised:
        Templates(tmp_path).render("typo", "en", context())
    assert isinstance(raised.value.__cause__, UndefinedError)
    with pytest.raises(RenderError):
        Templates().render("acknowledgement", "en", {"ticket": {"number": 1}})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ticket.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ ticket.update({'number': 1}) }}",
    ],
)
def test_sandbox_blocks_python_internals(tmp_path: Path, source: str) -> None:
    write(tmp_path, "en", {"evil.subject.j2": "x", "evil.txt.j2": source})
    with pytest.raises(RenderError) as raised:
        Templates(tmp_path).render("evil", "en", context())
    assert isinstance(raised.value.__cause__, SecurityError | UndefinedError)


def test_sandbox_error_is_a_security_error(tmp_path: Path) -> None:
    write(tmp_path, "en", {"evil.subject.j2": "x", "evil.txt.j2": "{{ ''.__class__.__mro__ }}"})
    with pytest.raises(RenderError) as raised:
        Templates(tmp_path).render("evil", "en", context())
    assert isinstance(raised.value.__cause__, SecurityError)


def test_python_errors_in_templates_become_render_errors(tmp_path: Path) -> None:
    write(tmp_path, "en", {"bad.subject.j2": "x", "bad.txt.j2": "{{ 1 / 0 }}"})
    with pytest.raises(RenderError):
        Templates(tmp_path).render("bad", "en", context())


def test_syntax_error_is_a_render_error(tmp_path: Path) -> None:
    write(tmp_path, "en", {"bad.subject.j2": "x", "bad.txt.j2": "{% if %}"})
    with pytest.raises(RenderError):
        Templates(tmp_path).render("bad", "en", context())


@pytest.mark.parametrize(
    ("name", "language"),
    [("no_such_notice", "en"), ("../secret", "en"), ("acknowledgement", "../en"), ("", "en")],
)
def test_unknown_or_malformed_names_are_refused(name: str, language: str) -> None:
    with pytest.raises(RenderError):
        Templates().render(name, language, context())


def test_rendered_notice_builds_a_mail_that_reads_back() -> None:
    rendered = Templates().render(
        "acknowledgement", "ru", with_subject("Принтер на 3-м этаже\nзажевал бумагу")
    )
    raw = build_message(
        OutgoingMail(
            from_name="Служба поддержки ACME",
            from_address="support@example.com",
            to=(Address("ivan@example.org", "Иван Петров"),),
            subject=f"[ACME #1042] {rendered.subject}",
            text=rendered.text,
            html=rendered.html,
            message_id="k3j9x@example.com",
            date=datetime(2030, 1, 2, tzinfo=UTC),
        )
    )
    parsed = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert parsed["Subject"] == "[ACME #1042] Принтер на 3-м этаже зажевал бумагу"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content() == rendered.text
