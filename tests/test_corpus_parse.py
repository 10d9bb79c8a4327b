"""parse_message and screen over every file of the shared real-world corpus.

Every file parses or is refused with MessageParseError, never anything else; text in a known
charset is decoded without replacement characters unless its bytes really are invalid; no
bounce of the sisimai collection is taken for a person's mail.
"""

from __future__ import annotations

import contextlib
import email
import time
from collections import Counter
from email.message import Message
from pathlib import Path

import pytest

from mailsupport.core.charsets import codec_for
from mailsupport.core.message import MailKind, ParsedMessage
from mailsupport.core.parse import decoded_payload, parse_message
from mailsupport.core.screen import screen
from mailsupport.errors import MessageParseError

pytestmark = pytest.mark.corpus

# Files sisimai keeps among its bounces that are, for a help desk, mail from a person: each is
# someone forwarding a bounce they received ("Fwd: Returned mail ..."), with their own From,
# their own return path and the bounce quoted as a forwarded message.
NOT_BOUNCES = {
    "maildir/bsd/lhost-sendmail-14.eml": "a person forwarding a bounce (Fwd: Returned mail)",
    "maildir/err/make-test-36.eml": "a person forwarding a bounce (Fwd: Returned mail)",
}

Outcome = ParsedMessage | MessageParseError | Exception


@pytest.fixture(scope="module")
def outcomes(corpus_files: list[Path]) -> dict[Path, Outcome]:
    """Each corpus file parsed once, with whatever parse_message raised instead."""
    results: dict[Path, Outcome] = {}
    started = time.perf_counter()
    for path in corpus_files:
        try:
            results[path] = parse_message(path.read_bytes())
        except Exception as exc:  # recorded so that the test can name every failing file
            results[path] = exc
    elapsed = time.perf_counter() - started
    print(f"\nparsed {len(results)} corpus files in {elapsed:.1f} s")
    return results


def test_every_file_parses_or_is_refused_with_a_reason(
    outcomes: dict[Path, Outcome], corpus_dir: Path
) -> None:
    crashed = {
        str(path.relative_to(corpus_dir)): repr(result)
        for path, result in outcomes.items()
        if isinstance(result, Exception) and not isinstance(result, MessageParseError)
    }
    parsed = [r for r in outcomes.values() if isinstance(r, ParsedMessage)]
    refused = {
        str(path.relative_to(corpus_dir)): str(result)
        for path, result in outcomes.items()
        if isinstance(result, MessageParseError)
    }
    kinds = Counter(screen(message).kind.value for message in parsed)
    print(f"files: {len(outcomes)}, parsed: {len(parsed)}, parse errors: {len(refused)}")
    print(f"kinds: {dict(sorted(kinds.items()))}")
    for name, reason in refused.items():
        print(f"refused {name}: {reason}")
    assert crashed == {}
    assert all(str(reason) for reason in refused.values())
    assert len(parsed) > 0.95 * len(outcomes)


def test_known_charsets_decode_without_replacement_characters(
    outcomes: dict[Path, Outcome], corpus_dir: Path
) -> None:
    damaged = []
    messages = known_parts = 0
    for path, result in outcomes.items():
        if not isinstance(result, ParsedMessage):
            continue
        parts = _text_parts(path.read_bytes())
        if not all(_decodes_cleanly(part) for part in parts):
            continue  # some bytes really are invalid: a replacement character is honest there
        messages += 1
        known_parts += sum(codec_for(part.get_content_charset()) is not None for part in parts)
        if "\ufffd" in result.text or "\ufffd" in result.html:
            damaged.append(str(path.relative_to(corpus_dir)))
    print(f"\nclean messages: {messages}, text parts in a known declared charset: {known_parts}")
    assert messages > 0.9 * len(outcomes)
    assert damaged == []


def _text_parts(raw: bytes) -> list[Message]:
    return [
        part
        for part in email.message_from_bytes(raw).walk()
        if not part.is_multipart() and part.get_content_type() in ("text/plain", "text/html")
    ]


def _decodes_cleanly(part: Message) -> bool:
    """Strictly valid in its declared, known charset (no literal U+FFFD either).

    Parts without a known charset are decoded by detection, which never substitutes; only a
    literal replacement character in them is excluded.
    """
    data = decoded_payload(part)
    codec = codec_for(part.get_content_charset())
    if codec is None:
        return "\ufffd".encode() not in data
    try:
        return "\ufffd" not in data.decode(codec)
    except UnicodeDecodeError:
        return False


def test_sisimai_bounces_are_never_taken_for_a_person(
    outcomes: dict[Path, Outcome], corpus_dir: Path
) -> None:
    root = corpus_dir / "sisimai-set-of-emails"
    screened: dict[str, MailKind] = {}
    for folder in ("maildir/bsd", "maildir/err"):
        for path in sorted((root / folder).glob("*.eml")):
            result = outcomes[path]
            assert isinstance(result, ParsedMessage), f"{path.name}: {result!r}"
            screened[str(path.relative_to(root))] = screen(result).kind
    kinds = Counter(kind.value for kind in screened.values())
    normal = sorted(name for name, kind in screened.items() if kind is MailKind.NORMAL)
    machine = len(screened) - len(normal)
    print(f"\nsisimai bsd+err: {len(screened)} files, {dict(sorted(kinds.items()))}")
    print(f"recognised as machine mail: {machine}/{len(screened)} ({machine / len(screened):.1%})")
    assert normal == sorted(NOT_BOUNCES)
    # List mail opens tickets; the list manager's answers (fml's) must not.
    assert [name for name, kind in screened.items() if kind is MailKind.LIST] == []


def test_whole_corpus_is_fast(corpus_files: list[Path]) -> None:
    started = time.perf_counter()
    for path in corpus_files:
        with contextlib.suppress(MessageParseError):
            screen(parse_message(path.read_bytes()))
    elapsed = time.perf_counter() - started
    print(f"\nparse + screen of {len(corpus_files)} files: {elapsed:.1f} s")
    assert elapsed < 60
