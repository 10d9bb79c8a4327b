"""parse_bounce on hand-written reports: RFC 3464 first, then the prose of older servers."""

from __future__ import annotations

import base64
import random
import time

import pytest

from mailsupport.core.dsn import (
    MAX_DIAGNOSTIC,
    MAX_RECIPIENTS,
    BounceReport,
    FailedRecipient,
    Severity,
    parse_bounce,
)

ORIGINAL = """\
Return-Path: <support+bounce-1042-abcdefghij@example.com>
Message-ID: <outbox-1042@example.com>
From: ACME Support <support@example.com>
To: Alice <alice@customer.test>, bob@customer.test
Cc: carol@customer.test
Subject: [ACME #1042] Printer on floor 3 is jammed

We are looking into it.
"""


def report(
    *recipient_blocks: str,
    report_type: str = "delivery-status",
    status_type: str = "message/delivery-status",
    original_type: str = "message/rfc822",
    prose: str = "Your message could not be delivered to one or more recipients.\n",
) -> bytes:
    """A multipart/report DSN as a relay sends it back to our bounce address."""
    blocks = "\n".join(recipient_blocks)
    return f"""\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@relay.example.net>
To: support+bounce-1042-abcdefghij@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@relay.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type={report_type}; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

{prose}
--BOUNDARY
Content-Type: {status_type}

Reporting-MTA: dns; relay.example.net
Arrival-Date: Mon, 2 Mar 2026 10:00:00 +0000

{blocks}
--BOUNDARY
Content-Type: {original_type}

{ORIGINAL}
--BOUNDARY--
""".encode()


def block(address: str, action: str, status: str, diagnostic: str = "") -> str:
    lines = [
        f"Final-Recipient: rfc822; {address}",
        f"Original-Recipient: rfc822;{address}",
        f"Action: {action}",
        f"Status: {status}",
    ]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    return "\n".join(lines) + "\n"


def only(result: BounceReport | None) -> FailedRecipient:
    assert result is not None
    assert len(result.recipients) == 1
    return result.recipients[0]


def test_one_failed_one_delivered() -> None:
    result = parse_bounce(
        report(
            block("alice@customer.test", "failed", "5.1.1", "550 5.1.1 <alice@customer.test>..."),
            block("bob@customer.test", "delivered", "2.0.0", "250 2.0.0 Ok"),
        )
    )
    assert result == BounceReport(
        recipients=(
            FailedRecipient(
                "alice@customer.test", Severity.HARD, "5.1.1", "550 5.1.1 <alice@customer.test>..."
            ),
        ),
        original_message_id="outbox-1042@example.com",
        original_recipients=("alice@customer.test", "bob@customer.test", "carol@customer.test"),
        reporting_mta="relay.example.net",
        structured=True,
    )


def test_delayed_is_soft() -> None:
    failure = only(parse_bounce(report(block("alice@customer.test", "delayed", "4.4.1"))))
    assert (failure.severity, failure.status) == (Severity.SOFT, "4.4.1")


def test_failed_with_a_temporary_status_is_final() -> None:
    """Postfix gives up after its queue lifetime with the last 4.x.x reply: nothing retries."""
    failure = only(parse_bounce(report(block("alice@customer.test", "failed", "4.4.7"))))
    assert (failure.severity, failure.status) == (Severity.HARD, "4.4.7")


def test_status_decides_when_action_is_missing() -> None:
    blocks = (
        "Final-Recipient: rfc822; alice@customer.test\nStatus: 5.2.2\n",
        "Final-Recipient: rfc822; bob@customer.test\nStatus: 4.2.2\n",
    )
    result = parse_bounce(report(*blocks))
    assert result is not None
    assert [(r.address, r.severity) for r in result.recipients] == [
        ("alice@customer.test", Severity.HARD),
        ("bob@customer.test", Severity.SOFT),
    ]


def test_only_successes_is_not_a_bounce() -> None:
    assert parse_bounce(report(block("alice@customer.test", "delivered", "2.0.0"))) is None
    assert parse_bounce(report(block("alice@customer.test", "relayed", "2.0.0"))) is None


def test_address_is_lower_cased_and_type_stripped() -> None:
    raw = report("Final-Recipient: RFC822; <Alice@Customer.TEST>\nAction: failed\nStatus: 5.1.1\n")
    assert only(parse_bounce(raw)).address == "alice@customer.test"


def test_original_recipient_is_the_fallback() -> None:
    raw = report(
        "Final-Recipient: x-unix; /var/spool/mail/alice\n"
        "Original-Recipient: rfc822; alice@customer.test\n"
        "Action: failed\nStatus: 5.2.2\n"
    )
    assert only(parse_bounce(raw)).address == "alice@customer.test"


def test_recipients_without_a_blank_line_between_them() -> None:
    raw = report(
        "Final-Recipient: rfc822; alice@customer.test\nAction: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; bob@customer.test\nAction: failed\nStatus: 5.2.2\n"
    )
    result = parse_bounce(raw)
    assert result is not None
    assert [(r.address, r.status) for r in result.recipients] == [
        ("alice@customer.test", "5.1.1"),
        ("bob@customer.test", "5.2.2"),
    ]


def test_folded_diagnostic_is_one_line_and_bounded() -> None:
    long_text = "mailbox unavailable " * 40
    raw = report(block("alice@customer.test", "failed", "5.1.1", f"550 5.1.1\n    {long_text}"))
    diagnostic = only(parse_bounce(raw)).diagnostic
    assert "\n" not in diagnostic
    assert diagnostic.startswith("550 5.1.1 mailbox unavailable")
    assert len(diagnostic) <= MAX_DIAGNOSTIC


def test_global_delivery_status() -> None:
    raw = report(
        "Original-Recipient: utf-8; δοκιμή@παράδειγμα.δοκιμή\n"
        "Final-Recipient: utf-8; δοκιμή@παράδειγμα.δοκιμή\n"
        "Action: failed\nStatus: 5.1.1\n",
        block("bob@customer.test", "delivered", "2.0.0"),
        report_type="global-delivery-status",
        status_type="message/global-delivery-status",
        original_type="message/global-headers",
    )
    result = parse_bounce(raw)
    assert result is not None
    assert result.structured
    assert only(result) == FailedRecipient("δοκιμή@παράδειγμα.δοκιμή", Severity.HARD, "5.1.1", "")
    assert result.original_message_id == "outbox-1042@example.com"


def test_base64_global_delivery_status() -> None:
    fields = (
        "Reporting-MTA: dns; relay.example.net\n\n"
        "Final-Recipient: utf-8; δοκιμή@παράδειγμα.δοκιμή\nAction: failed\nStatus: 5.1.1\n"
    )
    encoded = base64.encodebytes(fields.encode()).decode()
    raw = f"""\
From: MAILER-DAEMON@relay.example.net
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=global-delivery-status; boundary="B"

--B
Content-Type: text/plain

Delivery failed.
--B
Content-Type: message/global-delivery-status
Content-Transfer-Encoding: base64

{encoded}
--B--
""".encode()
    result = parse_bounce(raw)
    assert result is not None
    assert only(result).address == "δοκιμή@παράδειγμα.δοκιμή"
    assert result.reporting_mta == "relay.example.net"


def test_headers_only_original() -> None:
    raw = report(
        block("alice@customer.test", "failed", "5.1.1"), original_type="text/rfc822-headers"
    )
    result = parse_bounce(raw)
    assert result is not None
    assert result.original_message_id == "outbox-1042@example.com"
    assert "carol@customer.test" in result.original_recipients


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_line_endings_do_not_matter(newline: bytes) -> None:
    raw = report(block("alice@customer.test", "failed", "5.1.1", "550 5.1.1 unknown user"))
    assert parse_bounce(raw.replace(b"\n", newline)) == parse_bounce(raw)


QMAIL = b"""\
Return-Path: <>
From: MAILER-DAEMON@mx.customer.test
To: support+bounce-1042-abcdefghij@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.customer.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<alice@customer.test>:
192.0.2.7 does not like recipient.
Remote host said: 550 5.1.1 <alice@customer.test>: Recipient address rejected
Giving up on 192.0.2.7.

<bob@customer.test>:
192.0.2.7 does not like recipient.
Remote host said: 452 4.2.2 <bob@customer.test>: Mailbox full
Giving up on 192.0.2.7.

--- Below this line is a copy of the message.

""" + ORIGINAL.encode()


def test_qmail() -> None:
    result = parse_bounce(QMAIL)
    assert result is not None
    assert not result.structured
    assert [(r.address, r.severity, r.status) for r in result.recipients] == [
        ("alice@customer.test", Severity.HARD, "5.1.1"),
        ("bob@customer.test", Severity.SOFT, "4.2.2"),
    ]
    assert "Recipient address rejected" in result.recipients[0].diagnostic
    assert result.original_message_id == "outbox-1042@example.com"
    assert result.reporting_mta == "mx.customer.test"
    # Carol is only in the quoted copy, and the report never names her.
    assert "carol@customer.test" in result.original_recipients


EXIM = b"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.customer.test>
To: support+bounce-1042-abcdefghij@example.com
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: alice@customer.test
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  alice@customer.test
    SMTP error from remote mail server after RCPT TO:<alice@customer.test>:
    host mx.customer.test [192.0.2.7]: 550 5.1.1 <alice@customer.test>... User unknown

------ This is a copy of the message, including all the headers. ------

""" + ORIGINAL.encode()


def test_exim() -> None:
    result = parse_bounce(EXIM)
    assert result is not None
    failure = only(result)
    assert (failure.address, failure.severity, failure.status) == (
        "alice@customer.test",
        Severity.HARD,
        "5.1.1",
    )
    assert "User unknown" in failure.diagnostic
    assert result.original_message_id == "outbox-1042@example.com"


def test_exim_delay_warning_is_soft() -> None:
    raw = b"""\
From: Mail Delivery System <Mailer-Daemon@mx.customer.test>
To: support+bounce-1042-abcdefghij@example.com
Subject: Warning: message 1vABCD-000123-4x delayed 24 hours

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.customer.test.

The message identifier is:     1vABCD-000123-4x
The subject of the message is: [ACME #1042] Printer on floor 3 is jammed

The address to which the message has not yet been delivered is:

  alice@customer.test
    host mx.customer.test [192.0.2.7]
    Delay reason: SMTP error from remote mail server after RCPT TO:<alice@customer.test>:
    451 Temporary local problem - please try later

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
"""
    failure = only(parse_bounce(raw))
    assert (failure.address, failure.severity) == ("alice@customer.test", Severity.SOFT)


def test_sendmail_transcript_names_the_recipient_not_the_sender() -> None:
    raw = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.customer.test>
To: support+bounce-1042-abcdefghij@example.com
Subject: Returned mail: see transcript for details

The original message was received at Mon, 2 Mar 2026 10:00:00 +0000
from relay.example.net [192.0.2.1]

   ----- Transcript of session follows -----
>>> MAIL From:<support+bounce-1042-abcdefghij@example.com>
<<< 250 2.1.0 Sender ok
>>> RCPT To:<alice@customer.test>
<<< 550 5.1.1 <alice@customer.test>... User unknown
550 5.1.1 <alice@customer.test>... User unknown
"""
    failure = only(parse_bounce(raw))
    assert (failure.address, failure.severity, failure.status) == (
        "alice@customer.test",
        Severity.HARD,
        "5.1.1",
    )


def test_office365_sentence() -> None:
    raw = b"""\
From: postmaster@outlook.example
To: support+bounce-1042-abcdefghij@example.com
Subject: Undeliverable: [ACME #1042] Printer on floor 3 is jammed
Content-Type: text/plain; charset=utf-8

Your message to alice@customer.test couldn't be delivered.
alice wasn't found at customer.test.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found'
"""
    failure = only(parse_bounce(raw))
    assert (failure.address, failure.severity, failure.status) == (
        "alice@customer.test",
        Severity.HARD,
        "5.1.10",
    )


def test_quoted_recipients_are_used_only_when_the_report_names_nobody() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.customer.test
To: support+bounce-1042-abcdefghij@example.com
Subject: Returned mail

Your message could not be delivered: the mail system gave up after 5 days.

--- Original message follows.

""" + ORIGINAL.encode()
    result = parse_bounce(raw)
    assert result is not None
    assert [r.address for r in result.recipients] == [
        "alice@customer.test",
        "bob@customer.test",
        "carol@customer.test",
    ]
    assert all(r.severity is Severity.HARD for r in result.recipients)


def test_report_without_any_address_still_counts() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.customer.test
To: support+bounce-1042-abcdefghij@example.com
Subject: Undelivered Mail Returned to Sender
In-Reply-To: <outbox-1042@example.com>

Delivery failed permanently: 554 5.4.4 no route to the destination.
"""
    result = parse_bounce(raw)
    assert result is not None
    assert result.recipients == (
        FailedRecipient(
            "",
            Severity.HARD,
            "5.4.4",
            "Delivery failed permanently: 554 5.4.4 no route to the destination.",
        ),
    )
    assert result.original_message_id == "outbox-1042@example.com"


def test_sender_addresses_are_never_reported() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.customer.test
To: support+bounce-1042-abcdefghij@example.com
Subject: Undelivered Mail Returned to Sender

Delivery to alice@customer.test failed.
550 5.7.1 <support+bounce-1042-abcdefghij@example.com>... Sender rejected
For further assistance, please contact <postmaster@customer.test>.
"""
    result = parse_bounce(raw)
    assert result is not None
    assert [r.address for r in result.recipients] == ["alice@customer.test"]


def test_recipient_list_is_capped() -> None:
    blocks = [block(f"user{i}@customer.test", "failed", "5.1.1") for i in range(500)]
    result = parse_bounce(report(*blocks))
    assert result is not None
    assert len(result.recipients) == MAX_RECIPIENTS


def test_amazon_ses_notification() -> None:
    raw = b"""\
From: no-reply@sns.amazonaws.com
To: support@example.com
Subject: AWS Notification Message
Content-Type: text/plain; charset=UTF-8

{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[
{"emailAddress":"alice@customer.test","action":"failed","status":"5.1.1",
"diagnosticCode":"smtp; 550 5.1.1 user unknown"}],"reportingMTA":"dsn; a1.amazonses.com"},
"mail":{"destination":["alice@customer.test"],
"commonHeaders":{"messageId":"<outbox-1042@example.com>"}}}
"""
    result = parse_bounce(raw)
    assert result is not None
    assert only(result) == FailedRecipient(
        "alice@customer.test", Severity.HARD, "5.1.1", "550 5.1.1 user unknown"
    )
    assert result.original_message_id == "outbox-1042@example.com"
    assert result.reporting_mta == "a1.amazonses.com"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: alice@customer.test\nTo: support@example.com\nSubject: Printer\n\n"
        b"The printer on floor 3 is jammed again, please send someone.\n",
        # A person quoting a failure in a normal mail is still a person.
        b"From: alice@customer.test\nTo: support@example.com\nSubject: Re: [ACME #1042]\n\n"
        b"My colleague says your mail to bob@customer.test could not be delivered.\n",
        # Vacation replies go to the return path, our bounce address, with a null sender.
        b"Return-Path: <>\nFrom: Alice <alice@customer.test>\n"
        b"To: support+bounce-1042-abcdefghij@example.com\nSubject: Out of office\n"
        b"Auto-Submitted: auto-replied\n\nI am away until Monday; replies may be delayed.\n"
        b"Email bob@customer.test for anything urgent, there is a problem with my phone.\n",
        # An abuse report shares multipart/report with DSNs.
        b"From: abuse@isp.test\nContent-Type: multipart/report; report-type=feedback-report;"
        b' boundary="b"\n\n--b\nContent-Type: text/plain\n\nspam report\n--b\n'
        b"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n",
    ],
)
def test_ordinary_mail_is_not_a_bounce(raw: bytes) -> None:
    assert parse_bounce(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\xff\xfe\x00garbage",
        b"Content-Type: multipart/report; boundary=\n\n--\n",
        b"Content-Type: message/delivery-status\n\n\xff\xff: \xfe\n\nAction: failed\n",
        b"Content-Type: message/rfc822\n\n" * 2000,
        b'Content-Type: multipart/mixed; boundary="a"\n\n--a\n' * 2000,
        b"From: MAILER-DAEMON@x.test\nSubject: failure\n\n" + b"@" * 200_000,
        b'{"notificationType":"Bounce","bounce":' + b"[" * 100_000,
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    result = parse_bounce(raw)
    assert result is None or isinstance(result, BounceReport)


def test_random_bytes_never_raise() -> None:
    generator = random.Random(1042)
    for _ in range(50):
        raw = bytes(generator.getrandbits(8) for _ in range(generator.randrange(1, 3000)))
        parse_bounce(b"From: MAILER-DAEMON@x.test\nSubject: failure\n\n" + raw)
        parse_bounce(raw)


def test_huge_body_is_handled_quickly() -> None:
    head = report(block("alice@customer.test", "failed", "5.1.1"))
    huge = head.replace(b"We are looking into it.", b"x" * 5_000_000)
    prose = QMAIL + b"y" * 5_000_000
    started = time.perf_counter()
    assert only(parse_bounce(huge)).address == "alice@customer.test"
    assert parse_bounce(prose) is not None
    assert time.perf_counter() - started < 3
