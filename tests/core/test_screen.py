"""screen(): each rule on a small hand-written message, then on real mail from the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsupport.core.message import MailKind, Screening
from mailsupport.core.outmail import new_message_id
from mailsupport.core.parse import parse_message
from mailsupport.core.screen import screen

HUMAN = ("From: Carol Customer <carol@customer.test>", "Return-Path: <carol@customer.test>")

DSN_BODY = (
    "--dsn\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
    "--dsn\nContent-Type: message/delivery-status\n\n"
    "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; gone@example.net\n"
    "Action: failed\nStatus: 5.1.1\n"
    "--dsn\nContent-Type: text/rfc822-headers\n\nMessage-ID: <ours@example.com>\n--dsn--\n"
)


def check(*headers: str, body: str = "Hello\n", **options: frozenset[str]) -> Screening:
    raw = "\n".join(headers) + "\n\n" + body
    return screen(parse_message(raw.encode()), **options)


def test_a_person_writing_is_normal_and_may_be_answered() -> None:
    result = check(*HUMAN, "Subject: Printer on floor 3 is jammed")
    assert result == Screening(MailKind.NORMAL, (), no_auto_reply=False)


def test_delivery_status_report_is_a_bounce() -> None:
    result = check(
        "From: Mail Delivery System <mailer-daemon@mx.example.net>",
        "Subject: Undelivered Mail Returned to Sender",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"',
        body=DSN_BODY,
    )
    assert result.kind is MailKind.BOUNCE
    assert result.no_auto_reply
    assert "multipart/report; report-type=delivery-status" in result.reasons


def test_delivery_status_part_inside_another_multipart_is_a_bounce() -> None:
    result = check(
        "From: relay@example.net",
        "Subject: Notice",
        'Content-Type: multipart/mixed; boundary="dsn"',
        body=DSN_BODY,
    )
    assert result.kind is MailKind.BOUNCE
    assert "message/delivery-status part" in result.reasons


def test_abuse_report_is_feedback() -> None:
    result = check(
        "From: abuse@isp.example",
        "Subject: Abuse report",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"',
        body=(
            "--arf\nContent-Type: text/plain\n\nThis is an abuse report.\n"
            "--arf\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
            "--arf\nContent-Type: message/rfc822\n\nFrom: ours@example.com\n\nspam?\n--arf--\n"
        ),
    )
    assert result.kind is MailKind.FEEDBACK
    assert result.no_auto_reply


def test_read_receipt_is_an_automatic_reply() -> None:
    result = check(
        *HUMAN,
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="m"',
        body=(
            "--m\nContent-Type: text/plain\n\nRead.\n"
            "--m\nContent-Type: message/disposition-notification\n\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\n--m--\n"
        ),
    )
    assert result.kind is MailKind.AUTO_REPLY


@pytest.mark.parametrize(
    "sender",
    ["MAILER-DAEMON@mx.example.net", "MAILER-DAEMON (Mail Delivery System)", "Mailer_Daemon@x.org"],
)
def test_mailer_daemon_is_a_bounce_whatever_else(sender: str) -> None:
    result = check(f"From: {sender}", "Return-Path: <relay@example.net>", "Subject: Hello")
    assert result.kind is MailKind.BOUNCE


def test_postmaster_with_null_return_path_is_a_bounce() -> None:
    result = check("From: postmaster@example.net", "Return-Path: <>", "Subject: Nyaan")
    assert result.kind is MailKind.BOUNCE


def test_postmaster_without_return_path_needs_a_sign_of_a_bounce() -> None:
    bounce = check(
        "From: post_master@vtext.example.com",
        "Subject: Re:Test message",
        body="Error: Invalid user address\n\n550 - Requested action not taken: no such user here\n",
    )
    assert bounce.kind is MailKind.BOUNCE
    person = check("From: Bob <postmaster@example.com>", "Subject: Our DNS moved")
    assert person.kind is MailKind.NORMAL
    assert person.no_auto_reply


def test_postmaster_writing_as_a_person_is_not_a_bounce() -> None:
    result = check(
        "From: postmaster@example.org", "Return-Path: <admin@example.org>", "Subject: A question"
    )
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply


@pytest.mark.parametrize(
    "subject",
    [
        "Undelivered Mail Returned to Sender",
        "Delivery Status Notification (Failure)",
        "Mail delivery failed: returning message to sender",
        "failure notice",
        "Undeliverable: Printer on floor 3",
        "Returned mail: see transcript for details",
        "Mail System Error - Returned Mail",
        "Warning: could not send message for past 4 hours",
        "Unzustellbar: Drucker",
        "Non remis : imprimante",
        "Ваше сообщение не доставлено. Mail failure.",
        "=?iso-2022-jp?B?GyRCJWEhPCVrJSglaSE8RExDThsoQg==?=",
    ],
)
def test_bounce_subjects_with_a_null_return_path(subject: str) -> None:
    result = check("From: relay@example.net", "Return-Path: <>", f"Subject: {subject}")
    assert result.kind is MailKind.BOUNCE


def test_bounce_subject_from_a_person_only_stops_automatic_answers() -> None:
    result = check(*HUMAN, "Subject: Undeliverable mail when I write to sales")
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply


def test_forwarded_bounce_is_mail_from_a_person() -> None:
    result = check(*HUMAN, "Subject: Fwd: Returned mail: see transcript for details")
    assert result == Screening(MailKind.NORMAL, (), no_auto_reply=False)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("auto-replied", MailKind.AUTO_REPLY),
        ("auto-replied (vacation)", MailKind.AUTO_REPLY),
        ("auto-generated", MailKind.AUTOMATIC),
        ("auto-notified; owner-email=x", MailKind.AUTOMATIC),
    ],
)
def test_auto_submitted_other_than_no_is_never_answered(value: str, kind: MailKind) -> None:
    """An auto-reply answers a mail; other automatic mail (a notice) answers nothing."""
    result = check(*HUMAN, f"Auto-Submitted: {value}", "Subject: Away")
    assert result.kind is kind
    assert result.no_auto_reply


def test_an_incident_notice_is_automatic_mail_not_an_auto_reply() -> None:
    result = check(
        "From: ServiceNow <instance@service-now.example>",
        "Auto-Submitted: auto-generated",
        "Subject: Incident INC0012345 has been assigned to your group",
    )
    assert result.kind is MailKind.AUTOMATIC
    assert result.no_auto_reply


@pytest.mark.parametrize("subject", ["Out of Office: Printer jammed", "I am on vacation"])
def test_an_auto_generated_absence_notice_is_an_auto_reply(subject: str) -> None:
    result = check(*HUMAN, "Auto-Submitted: auto-generated", f"Subject: {subject}")
    assert result.kind is MailKind.AUTO_REPLY


def test_auto_submitted_no_is_a_person() -> None:
    result = check(*HUMAN, "Auto-Submitted: no", "Subject: Hello")
    assert result == Screening(MailKind.NORMAL, (), no_auto_reply=False)


@pytest.mark.parametrize(
    "header",
    [
        "X-Autoreply: yes",
        "X-Autorespond: vacation",
        "X-Autogenerated: Reply",
        "Precedence: auto_reply",
    ],
)
def test_autoresponder_headers(header: str) -> None:
    assert check(*HUMAN, header, "Subject: Hi").kind is MailKind.AUTO_REPLY


@pytest.mark.parametrize("value", ["All", "OOF, AutoReply", "DR, RN, NRN, OOF"])
def test_auto_response_suppress_asks_for_silence_but_is_no_auto_reply(value: str) -> None:
    result = check(*HUMAN, f"X-Auto-Response-Suppress: {value}", "Subject: New request")
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply
    assert any(reason.startswith("X-Auto-Response-Suppress") for reason in result.reasons)


def test_auto_response_suppress_for_receipts_only_changes_nothing() -> None:
    result = check(*HUMAN, "X-Auto-Response-Suppress: DR, RN, NRN", "Subject: New request")
    assert result == Screening(MailKind.NORMAL, (), no_auto_reply=False)


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Printer on floor 3",
        "Auto reply: Nyaan",
        "Out of Office: Printer",
        "Out of Office AutoReply: Printer",
        "Abwesenheitsnotiz: Drucker",
        "Réponse automatique : imprimante",
        "Автоответ: Принтер",
        "自動返信: プリンター",
    ],
)
def test_vacation_subjects_are_automatic_replies(subject: str) -> None:
    assert check(*HUMAN, f"Subject: {subject}").kind is MailKind.AUTO_REPLY


def test_absence_in_a_person_subject_only_stops_automatic_answers() -> None:
    result = check(*HUMAN, "Subject: Out of office next week, who covers the printer?")
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply
    assert check(*HUMAN, "Subject: Re: Automatic reply: x").kind is MailKind.NORMAL


@pytest.mark.parametrize(
    "header",
    [
        "List-Id: <users.lists.example.org>",
        "List-Unsubscribe: <mailto:leave@lists.example.org>",
        "List-Post: <mailto:users@lists.example.org>",
        "Mailing-List: contact users-help@example.org; run by ezmlm",
        "Precedence: bulk",
        "Precedence: list",
        "Precedence: junk",
    ],
)
def test_list_and_bulk_mail(header: str) -> None:
    result = check(*HUMAN, header, "Subject: Newsletter")
    assert result.kind is MailKind.LIST
    assert result.no_auto_reply


def test_a_bounce_of_list_mail_is_a_bounce() -> None:
    result = check(
        "From: mailer-daemon@mx.example.net", "List-Id: <users.lists.example.org>", "Subject: x"
    )
    assert result.kind is MailKind.BOUNCE


@pytest.mark.parametrize(
    "sender",
    [
        "noreply@shop.example",
        "no-reply@shop.example",
        "do-not-reply@shop.example",
        "DoNotReply@shop.example",
        "bounces+1234-abcd=customer.test@mailer.example",
    ],
)
def test_no_reply_senders_are_never_answered(sender: str) -> None:
    result = check(f"From: {sender}", "Subject: Your order")
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply


def test_null_return_path_alone_is_never_answered() -> None:
    result = check("From: carol@customer.test", "Return-Path: <>", "Subject: Hi")
    assert result.kind is MailKind.NORMAL
    assert result.no_auto_reply
    assert "null return path" in result.reasons


@pytest.mark.parametrize("written", ["<MAILER-DAEMON>", "MAILER-DAEMON", "<mailer-daemon>"])
def test_postfix_spelling_of_the_null_return_path_is_the_null_return_path(written: str) -> None:
    """Postfix's pipe(8) passes <> as ${sender} = MAILER-DAEMON; its R flag writes that too."""
    result = check("From: carol@customer.test", f"Return-Path: {written}", "Subject: Hi")
    assert result.no_auto_reply
    assert "null return path" in result.reasons
    returned = check(
        "From: relay@example.net",
        f"Return-Path: {written}",
        "Subject: Hi",
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\nContent-Type: text/plain\n\nx\n--b\nContent-Type: message/rfc822\n\n"
        "Subject: ours\n\nbody\n--b--\n",
    )
    assert returned.kind is MailKind.BOUNCE


def test_a_mailer_daemon_address_with_a_domain_is_a_real_return_path() -> None:
    result = check(*HUMAN[:1], "Return-Path: <mailer-daemon@customer.test>", "Subject: Hi")
    assert "null return path" not in result.reasons


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        ("X-Spam-Flag: YES", "X-Spam-Flag: YES"),
        ("X-Spam: Yes", "X-Spam: Yes"),
        ("X-Spam-Status: Yes, score=7.3 required=5.0 tests=BAYES_99", "X-Spam-Status: Yes"),
        ("X-Spamd-Result: default: True [16.20 / 15.00];\n BAYES_SPAM(5.1)[99%]", None),
        ("X-Rspamd-Action: reject", "X-Rspamd-Action: reject"),
        ("X-Rspamd-Action: add header", "X-Rspamd-Action: add header"),
        ("X-Rspamd-Action: rewrite subject", "X-Rspamd-Action: rewrite subject"),
    ],
)
def test_mail_the_filter_flagged_as_spam_is_kept_but_never_answered(
    header: str, verdict: str | None
) -> None:
    result = check(*HUMAN, header, "Subject: Invoice overdue")
    assert result.kind is MailKind.NORMAL  # it still opens or joins its ticket
    assert result.no_auto_reply
    assert result.spam == (verdict or "X-Spamd-Result: default: True [16.20 / 15.00]")
    assert f"flagged as spam: {result.spam}" in result.reasons


@pytest.mark.parametrize(
    "header",
    [
        "X-Spam-Flag: NO",
        "X-Spam-Status: No, score=0.1 required=5.0",
        "X-Spamd-Result: default: False [2.10 / 15.00]",
        "X-Rspamd-Action: no action",
        "X-Rspamd-Action: greylist",
    ],
)
def test_mail_the_filter_passed_may_be_answered(header: str) -> None:
    result = check(*HUMAN, header, "Subject: Invoice overdue")
    assert result == Screening(MailKind.NORMAL, (), no_auto_reply=False)


def test_our_own_mail_is_never_answered() -> None:
    own = {"own_addresses": frozenset({"support@example.com"}), "own_domains": frozenset()}
    assert check("From: support@example.com", "Subject: x", **own).no_auto_reply
    assert check("From: support+bounce-1-x@example.com", "Subject: x", **own).no_auto_reply
    by_domain = {"own_domains": frozenset({"example.com"})}
    # A colleague at our domain is a person, and so is their mail client's Message-ID.
    assert not check("From: alice@example.com", "Subject: x", **by_domain).no_auto_reply
    assert not check(
        *HUMAN, "Message-ID: <42.abc@example.com>", "Subject: x", **by_domain
    ).no_auto_reply
    ours = new_message_id("example.com")
    looped = check(*HUMAN, f"Message-ID: <{ours}>", "Subject: x", **by_domain)
    assert looped.kind is MailKind.NORMAL
    assert looped.no_auto_reply
    assert any("Message-ID" in reason for reason in looped.reasons)
    assert not check(
        *HUMAN, "Message-ID: <1@customer.test>", "Subject: x", **by_domain
    ).no_auto_reply


# -- real mail ----------------------------------------------------------------------------

SISIMAI = "sisimai-set-of-emails/maildir"


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (f"{SISIMAI}/bsd/lhost-postfix-01.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/lhost-qmail-01.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/lhost-exchange2003-01.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/lhost-gmail-01.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/lhost-kddi-01.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/lhost-amazonses-10.eml", MailKind.BOUNCE),
        (f"{SISIMAI}/bsd/arf-01.eml", MailKind.FEEDBACK),
        (f"{SISIMAI}/bsd/arf-22.eml", MailKind.FEEDBACK),
        (f"{SISIMAI}/bsd/rfc3834-02.eml", MailKind.AUTO_REPLY),
        (f"{SISIMAI}/bsd/rfc3834-03.eml", MailKind.AUTO_REPLY),
        (f"{SISIMAI}/not/is-not-bounce-01.eml", MailKind.NORMAL),
        (f"{SISIMAI}/not/is-not-bounce-02.eml", MailKind.NORMAL),
        (
            "mailgun-flanker/tests/fixtures/messages/disposition-notification.eml",
            MailKind.AUTO_REPLY,
        ),
        ("mailgun-flanker/tests/fixtures/messages/long-links.eml", MailKind.NORMAL),
        ("mikel-mail/spec/fixtures/emails/error_emails/empty_in_reply_to.eml", MailKind.LIST),
    ],
)
def test_real_mail(corpus_dir: Path, path: str, kind: MailKind) -> None:
    result = screen(parse_message((corpus_dir / path).read_bytes()))
    assert result.kind is kind, result.reasons
    if kind is not MailKind.NORMAL:
        assert result.no_auto_reply


def test_the_fml_list_managers_own_answers_are_automatic_replies() -> None:
    manager = (
        "From: neko-admin@example.org",
        "Return-Path: <neko-admin@example.org>",
        "Subject: You carol@customer.test are not member (neko-nyaan ML)",
        "X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]",
        "List-Subscribe: <mailto:neko-nyaan-ctl@example.org?body=subscribe>",
    )
    answer = check(*manager)
    assert answer.kind is MailKind.AUTO_REPLY
    assert "reply from the fml list manager" in answer.reasons
    post = check(*manager[:2], "Subject: meeting", manager[3], "X-Mail-Count: 01234")
    assert post.kind is MailKind.LIST  # a post to the list: it has its article number
