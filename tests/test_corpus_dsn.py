"""parse_bounce over the real bounces of the shared corpus.

sisimai's collection holds bounces from about fifty mail servers, plus abuse reports and
vacation replies that must not read as bounces. The share of reports whose failed recipient
is found is measured and printed; the test fails when it drops below what the parser reaches
today, so a regression in a common pattern shows up at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailsupport.core import dsn
from mailsupport.core.dsn import BounceReport, Severity, parse_bounce

pytestmark = pytest.mark.corpus

SISIMAI = Path("sisimai-set-of-emails", "maildir")

# Measured at 95.1 % (recipient) and 85.5 % (original Message-ID) over maildir/bsd. The rest
# are abuse reports, vacation replies, Amazon SES complaint and delivery notices, mailing-list
# refusals and bounces forwarded inside another bounce.
MIN_RECIPIENT_SHARE = 0.93
MIN_MESSAGE_ID_SHARE = 0.83

HARD, SOFT = Severity.HARD, Severity.SOFT

# File: the failed recipients with their severity, read from each file by hand.
EXPECTED: dict[str, list[tuple[str, Severity]]] = {
    # RFC 3464, two recipients.
    "lhost-postfix-02.eml": [("filtered@example.co.jp", HARD), ("userunknown@example.co.jp", HARD)],
    # Postfix gave up on a temporary failure: "Action: failed" with a 4.4.1 status is final.
    "lhost-postfix-08.eml": [("kijitora@example.com", HARD)],
    # A quoted local part in Final-Recipient.
    "lhost-postfix-32.eml": [('"neko....nyaan...."@libsisimai.org', HARD)],
    # qmail: "<address>:" then the reason.
    "lhost-qmail-01.eml": [("kijitora@example.ne.jp", HARD)],
    # Exim: the SMTP reply names the sender, shironeko@, which is not the failed recipient.
    "lhost-exim-01.eml": [("kijitora@example.ed.jp", HARD)],
    # Gmail prose: of the two addressees of the returned mail only one failed.
    "lhost-gmail-01.eml": [("userunknown@example.jp", HARD)],
    # Gmail delay warning.
    "lhost-gmail-06.eml": [("kijitora@example.jp", SOFT)],
    # Exchange 2003: "did not reach the following recipient(s)", one address per paragraph.
    "lhost-exchange2003-02.eml": [
        ("kijitora@example.co.jp", HARD),
        ("mikeneko@example.co.jp", HARD),
    ],
    # The DSN's Final-Recipient is unreadable ("@mx.example.org"); the prose names the address.
    "lhost-sendmail-15.eml": [("kijitora@example.org", HARD)],
    # Exim inside Mail.Ru, two recipients.
    "lhost-mailru-03.eml": [("mikeneko@example.jp", HARD), ("sabineko@example.jp", HARD)],
    # Office 365 DSN with a three-digit enhanced code.
    "lhost-office365-04.eml": [("otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp", HARD)],
    # Zoho delay: "Message will be retried for 4 more day(s)".
    "lhost-zoho-04.eml": [("kijitora@6kaku.example.co.jp", SOFT)],
    # Amazon SES through SNS: JSON in a plain text mail.
    "lhost-amazonses-09.eml": [("bounce@simulator.amazonses.com", HARD)],
    # The carrier names the failed address in a "Recipient:" line above a transcript.
    "lhost-ezweb-08.eml": [("kijitora-neko-nyaan-22222-cats@hotmail.com", HARD)],
}

# Files of the collection that carry no delivery failure.
NOT_FAILURES = {
    "arf-01.eml": "abuse report",
    "rfc3834-01.eml": "vacation reply",
    "rfc3464-28.eml": "Postfix address verification report, every recipient deliverable",
    "lhost-amazonses-12.eml": "Amazon SES delivery notification",
}


def parse_all(folder: Path) -> dict[str, BounceReport | None]:
    return {path.name: parse_bounce(path.read_bytes()) for path in sorted(folder.iterdir())}


def has_recipient(result: BounceReport | None) -> bool:
    return result is not None and any(r.address for r in result.recipients)


def shares(results: dict[str, BounceReport | None]) -> tuple[float, float]:
    found = sum(has_recipient(result) for result in results.values())
    ids = sum(
        result is not None and bool(result.original_message_id) for result in results.values()
    )
    return found / len(results), ids / len(results)


@pytest.fixture(scope="module")
def bsd(corpus_dir: Path) -> dict[str, BounceReport | None]:
    started = time.perf_counter()
    results = parse_all(corpus_dir / SISIMAI / "bsd")
    elapsed = time.perf_counter() - started
    recipients, ids = shares(results)
    print(
        f"\nparse_bounce on {len(results)} bsd files in {elapsed:.1f} s: "
        f"recipient found {recipients:.1%}, original Message-ID {ids:.1%}"
    )
    return results


def test_recipient_coverage(bsd: dict[str, BounceReport | None]) -> None:
    recipients, ids = shares(bsd)
    missing = sorted(name for name, result in bsd.items() if not has_recipient(result))
    assert recipients >= MIN_RECIPIENT_SHARE, missing
    assert ids >= MIN_MESSAGE_ID_SHARE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_known_failures(bsd: dict[str, BounceReport | None], name: str) -> None:
    result = bsd[name]
    assert result is not None
    assert [(r.address, r.severity) for r in result.recipients] == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(NOT_FAILURES))
def test_reports_without_failures(bsd: dict[str, BounceReport | None], name: str) -> None:
    assert bsd[name] is None, NOT_FAILURES[name]


def test_original_of_a_qmail_bounce(bsd: dict[str, BounceReport | None]) -> None:
    result = bsd["lhost-qmail-01.eml"]
    assert result is not None
    assert result.original_message_id == "000000000.9999999999999.JavaMail.postmaster@mailhub"
    assert result.original_recipients == ("kuroneko@example.com",)
    assert result.recipients[0].status == "5.5.0"
    assert not result.structured


def test_structured_report(bsd: dict[str, BounceReport | None]) -> None:
    result = bsd["lhost-postfix-02.eml"]
    assert result is not None
    assert result.structured
    assert result.reporting_mta == "smtp.example.com"
    assert [r.status for r in result.recipients] == ["5.2.1", "5.1.1"]
    assert (
        result.recipients[1].diagnostic == "550 5.1.1 <userunknown@example.co.jp>... User Unknown"
    )


@pytest.mark.parametrize("variant", ["dos", "mac"])
def test_line_ending_variants_read_the_same(
    corpus_dir: Path, bsd: dict[str, BounceReport | None], variant: str
) -> None:
    """The CRLF and bare-CR copies of a file give exactly what its LF copy gives."""
    folder = corpus_dir / SISIMAI / variant
    compared = 0
    for path in sorted(folder.iterdir()):
        twin = corpus_dir / SISIMAI / "bsd" / path.name
        raw = path.read_bytes()
        lf = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if twin.is_file() and twin.read_bytes() == lf:
            assert parse_bounce(raw) == bsd[path.name], path.name
            compared += 1
    assert compared >= 50
    recipients, ids = shares(parse_all(folder))
    print(f"\n{variant}: recipient found {recipients:.1%}, original Message-ID {ids:.1%}")
    assert recipients >= MIN_RECIPIENT_SHARE


@pytest.mark.parametrize(
    "folder",
    [
        SISIMAI / "err",
        Path("mailgun-flanker", "tests", "fixtures", "messages", "bounce"),
        Path("mikel-mail", "spec", "fixtures", "emails", "multipart_report_emails"),
    ],
)
def test_other_collections(corpus_dir: Path, folder: Path) -> None:
    results = parse_all(corpus_dir / folder)
    recipients, ids = shares(results)
    print(f"\n{folder}: recipient found {recipients:.1%}, original Message-ID {ids:.1%}")
    assert recipients == 1.0, sorted(n for n, r in results.items() if not has_recipient(r))


def test_whole_corpus_never_raises(corpus_files: list[Path]) -> None:
    """Every file of the corpus, bounce or not, is read without raising.

    parse_bounce has a last-resort guard against exceptions; real mail must never need it,
    so the unguarded reader is called too and a failure names the file.
    """
    started = time.perf_counter()
    for path in corpus_files:
        raw = path.read_bytes()
        try:
            unguarded = dsn._parse(raw)
        except Exception as exc:
            pytest.fail(f"{path}: {exc!r}")
        assert parse_bounce(raw) == unguarded
    assert time.perf_counter() - started < 20
