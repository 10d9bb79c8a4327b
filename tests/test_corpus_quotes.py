"""strip_quoted over the real replies of the shared corpus.

mailgun/talon's fixtures pair replies from a dozen clients with their expected new text (a
``*_reply_text`` file, otherwise "Hello"; every HTML reply says "Hi. I am fine. Thanks, Alex").
github/email_reply_parser ships its test mails without expectations here, so ours are written
below: the writer's new text, their signature kept, quoted history and the list footer under a
top-posted answer removed. Texts are compared with whitespace normalised. In every sample,
with or without an expectation, no quoted line or attribution header may survive, and the
result may not be empty, since each of them has new text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailsupport.core.htmltext import html_to_text
from mailsupport.core.parse import parse_message
from mailsupport.core.quotes import strip_quoted

pytestmark = pytest.mark.corpus

# Reached when this test was written: 41 of 41; a little room for a library update that
# reads one client differently.
MIN_PASSED = 39

TALON = Path("mailgun-talon/tests/fixtures")
GITHUB = Path("github-email_reply_parser/test/emails")
HTML_REPLY = "Hi. I am fine.\n\nThanks,\nAlex"

# Lines that only quoted history has: a ">" quote, an attribution, Outlook's separator.
_MARKERS = re.compile(
    r"^\s*>|(?:wrote|schrieb|написал|пишет)\s*:\s*$|-{5}\s*Original Message|"
    r"(?:^|\s)\*?From:\*?\s*\S*@|<[^<>\s]+@[^<>\s]+>\s*:\s*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Sample:
    name: str
    text: str
    html: str
    expected: str | None


def _github_expected(emails: Path) -> dict[str, str]:
    def whole(name: str) -> str:
        return (emails / f"{name}.txt").read_text(encoding="utf-8")

    return {
        "correct_sig": "this is an email with a correct -- signature.\n\n-- \nrick",
        "email_1_1": whole("email_1_1"),
        "email_1_3": "Oh thanks.\n\nHaving the function would be great.\n\n-Abhishek Kona",
        "email_1_4": "Awesome! I haven't had another problem with it.",
        "email_1_5": whole("email_1_5"),
        "email_1_6": "I get proper rendering as well.\n\nSent from a magnificent torch of pixels",
        "email_1_7": ":+1:",
        "email_2_1": "Outlook with a reply",
        "email_2_2": "Outlook with a reply directly above line",
        "email_2_3": "Outlook with a reply directly above line",
        "email_BlackBerry": whole("email_BlackBerry"),
        "email_bullets": (
            "test 2 this should list second\n\nand have spaces\n\nand retain this formatting"
            "\n\n\n   - how about bullets\n   - and another"
        ),
        "email_iPhone": whole("email_iPhone"),
        "email_multi_word_sent_from_my_mobile_device": whole(
            "email_multi_word_sent_from_my_mobile_device"
        ),
        "email_one_is_not_on": (
            "Thank, this is really helpful.\n\nOne outstanding question I had:\n\n"
            "Locally (on development), when I run..."
        ),
        "email_sent_from_my_not_signature": whole("email_sent_from_my_not_signature"),
        "email_sig_delimiter_in_middle_of_line": whole("email_sig_delimiter_in_middle_of_line"),
        "greedy_on": whole("greedy_on").split("On 9 Jan 2014")[0],
        "pathological": (
            "I think you're onto something. I will try to fix the problem as soon as I\n"
            "get back to a computer."
        ),
    }


def _samples(corpus: Path) -> list[Sample]:
    talon = corpus / TALON
    samples = []
    for path in sorted((talon / "standard_replies").glob("*.eml")):
        parsed = parse_message(path.read_bytes())
        expected_file = path.with_name(f"{path.stem}_reply_text")
        expected = expected_file.read_text(encoding="utf-8") if expected_file.exists() else "Hello"
        samples.append(Sample(f"talon/{path.stem}", parsed.text, parsed.html, expected))
    for path in sorted((talon / "html_replies").glob("*.html")):
        html = path.read_text(encoding="utf-8")
        samples.append(Sample(f"talon/html/{path.stem}", html_to_text(html), html, HTML_REPLY))
    html = (talon / "reply-separated-by-hr.html").read_text(encoding="utf-8")
    samples.append(Sample("talon/reply-separated-by-hr", html_to_text(html), html, "Hi there Bob"))
    parsed = parse_message((talon / "reply-quotations-share-block.eml").read_bytes())
    samples.append(Sample("talon/reply-quotations-share-block", parsed.text, parsed.html, None))
    emails = corpus / GITHUB
    expected_github = _github_expected(emails)
    for path in sorted(emails.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        samples.append(Sample(f"github/{path.stem}", text, "", expected_github.get(path.stem)))
    return samples


def _normalised(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def results(corpus_dir: Path) -> list[tuple[Sample, str]]:
    samples = _samples(corpus_dir)
    if not samples:
        pytest.skip("no reply samples in the corpus")
    return [(sample, strip_quoted(sample.text, sample.html)) for sample in samples]


def test_expected_new_text(results: list[tuple[Sample, str]]) -> None:
    judged = [(sample, got) for sample, got in results if sample.expected is not None]
    failed = [
        sample.name
        for sample, got in judged
        if _normalised(got) != _normalised(sample.expected or "")
    ]
    passed = len(judged) - len(failed)
    print(f"\nstrip_quoted: {passed}/{len(judged)} corpus replies as expected; missed: {failed}")
    assert passed >= MIN_PASSED, failed


def test_no_quoted_history_survives(results: list[tuple[Sample, str]]) -> None:
    leaked = {sample.name: m.group() for sample, got in results if (m := _MARKERS.search(got))}
    print(f"\n{len(results)} corpus replies checked for leftover quotes")
    assert leaked == {}


def test_new_text_is_never_lost(results: list[tuple[Sample, str]]) -> None:
    empty = [sample.name for sample, got in results if not got.strip()]
    assert empty == []
