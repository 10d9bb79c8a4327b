"""Recognise machine-generated mail (bounces, abuse reports, auto-replies, other automatic
mail, list mail) and mail the receiving MTA's filter flagged as spam.

Answering any of them automatically risks a mail loop (RFC 3834) or backscatter to a forged
sender, and a bounce or an abuse report must never open a ticket. The rules follow the RFCs
first (DSN and ARF structure, Auto-Submitted, List-*), then what RT, Znuny, Zammad and sisimai
learned from mailers that ignore them. Evidence that could equally come from a person (a
subject such as "Returned mail", a postmaster sender) only stops automatic answers unless
something else confirms it, because a misjudged customer mail would be silently left without
a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailsupport.core.message import MailKind, ParsedMessage, Screening
from mailsupport.core.nullsender import is_null_sender
from mailsupport.core.outmail import is_our_message_id

# Strongest first: a bounce of a list mail is a bounce, an abuse report quoting an
# auto-reply is a report, an absence notice is one whatever else its headers say.
_PRECEDENCE = (
    MailKind.FEEDBACK,
    MailKind.BOUNCE,
    MailKind.AUTO_REPLY,
    MailKind.AUTOMATIC,
    MailKind.LIST,
)

_DSN_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_PARTS = frozenset({"message/feedback-report"})
_MDN_PARTS = frozenset({"message/disposition-notification"})
_ORIGINAL_PARTS = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})

_LIST_HEADERS = (
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "Mailing-List",
    "X-Mailing-List",
    "X-MLServer",
    "X-ML-Name",
)
_AUTOREPLY_MARKERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Mail-Autoreply")

# Local parts compared with "-", "_" and "." removed, so "post_master" and "no-reply" match.
_DAEMONS = frozenset({"mailerdaemon", "maildaemon", "maildeliverysystem", "maildeliverysubsystem"})
_POSTMASTERS = frozenset({"postmaster"})
_NO_REPLY_PREFIXES = ("noreply", "donotreply", "dontreply", "bounce")
_SYSTEM_RETURN_PATHS = frozenset({"mailerdaemon", "postmaster", "doublebounce"})

_REPLY_OR_FORWARD = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|sv|vs|tr|rv|antw|odp|ответ|пересл|回复|转发|返信|転送)\s*(?:\[\d+\])?\s*:",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:ed|able)|returned mail|mail returned|return(?:ed|ing) (?:message )?to sender"
    r"|delivery status notification|mail delivery (?:failed|failure)|delivery fail"
    r"|fail(?:ure|ed) delivery|delivery has failed|failure notice|non-?deliver"
    r"|could ?n[o']t (?:be delivered|send)|mail system error|mail fail|delayed mail"
    r"|message .{0,80}delayed|error sending your mail|unzustellbar|nicht zustellbar"
    r"|non remis|non distribuable|onbestelbaar|non recapitabile|olevererbart"
    r"|kan ikke leveres|не доставлено|недоставлен|配信エラー|配信できません|不達"
    r"|メールエラー|退信|无法投递|未送达",
    re.IGNORECASE,
)
_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto[- ]?reply|auto[- ]?respon[sd]e?|autoresponder"
    r"|out of (?:the )?office|abwesenheitsnotiz|automatische antwort|réponse automatique"
    r"|risposta automatica|respuesta automática|resposta automática|automatisch antwoord"
    r"|autosvar|automatisk svar|automaattinen vastaus|odpowiedź automatyczna"
    r"|automatická odpověď|автоответ|автоматический ответ|自動返信|自动回复|自動回覆"
    r"|자동 응답)\b(?:[ -]?(?:auto[- ]?reply|reply|notice|notification))?\s*(?:[:：]|$)",
    re.IGNORECASE,
)
_VACATION_HINT = re.compile(
    r"\bauto:|out of (?:the )?office|on vacation|on holiday|\babwesend|away from (?:my|the) "
    r"(?:desk|office)|vacation (?:reply|notice)|\bautoreply|\bautoresponse|\bautomatic reply",
    re.IGNORECASE,
)
_JMRP_SUBJECT = re.compile(r"^\s*complaint about message from", re.IGNORECASE)
# Amazon SES reports through SNS as JSON, the notification itself possibly escaped inside it.
_SES_NOTIFICATION = re.compile(r'\\?"notificationType\\?"\s*:\s*\\?"(Bounce|Complaint|Delivery)')
_SMTP_ERROR = re.compile(
    r"\b[45]\.\d{1,3}\.\d{1,3}\b|\b[45]\d\d\b.{0,40}?\b(?:user|mailbox|recipient|address"
    r"|requested|denied|rejected|relay)",
    re.IGNORECASE,
)
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w.-]+)", re.IGNORECASE)
_SUPPRESS_TOKENS = frozenset({"all", "autoreply", "oof"})
# rspamd's actions that mean spam; "greylist" and "soft reject" only delay the mail.
_RSPAMD_SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
_RSPAMD_REJECT = re.compile(r"default:\s*true\b", re.IGNORECASE)
_PRECEDENCE_LIST = frozenset({"bulk", "list", "junk"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


@dataclass(frozen=True)
class _Evidence:
    """One observation; kind NORMAL means it only forbids an automatic answer."""

    kind: MailKind
    reason: str


def screen(
    msg: ParsedMessage,
    *,
    own_addresses: frozenset[str] = frozenset(),
    own_domains: frozenset[str] = frozenset(),
) -> Screening:
    """Classify a message and decide whether an automatic answer would be safe."""
    facts = _Facts.of(msg)
    spam = tuple(_spam_verdicts(msg))
    evidence = [
        *_report_evidence(msg, facts),
        *_bounce_evidence(msg, facts),
        *_auto_reply_evidence(msg, facts),
        *_list_evidence(msg),
        *_loop_evidence(msg, facts, own_addresses, own_domains),
        *(_Evidence(MailKind.NORMAL, f"flagged as spam: {verdict}") for verdict in spam),
    ]
    kinds = {item.kind for item in evidence}
    kind = next((k for k in _PRECEDENCE if k in kinds), MailKind.NORMAL)
    reasons = tuple(dict.fromkeys(item.reason for item in evidence))
    return Screening(kind, reasons, no_auto_reply=bool(evidence), spam=", ".join(spam))


@dataclass(frozen=True)
class _Facts:
    """Values several rules look at, worked out once."""

    sender: str  # the From address, or the raw From text when it did not parse
    sender_local: str  # its local part, lower-cased, without "-", "_" and "."
    return_local: str | None  # the same for the Return-Path; None when there is none
    null_return_path: bool  # the Return-Path is <> (or MAILER-DAEMON, as Postfix passes it)
    subject: str
    bounce_subject: bool  # reads like a bounce and is not a reply to or forward of one
    part_types: frozenset[str]

    @classmethod
    def of(cls, msg: ParsedMessage) -> _Facts:
        sender = msg.from_.email if msg.from_ else _raw_address(msg.header("from") or "")
        return_path = msg.return_path
        return cls(
            sender=sender,
            sender_local=_local_part(sender),
            return_local=None if return_path is None else _local_part(return_path),
            null_return_path=is_null_sender(return_path),
            subject=msg.subject,
            bounce_subject=_is_bounce_subject(msg.subject),
            part_types=frozenset(a.content_type for a in msg.attachments),
        )

    @property
    def from_daemon(self) -> bool:
        return self.sender_local in _DAEMONS

    @property
    def from_postmaster(self) -> bool:
        return self.sender_local in _POSTMASTERS

    @property
    def system_return_path(self) -> bool:
        return self.return_local in _SYSTEM_RETURN_PATHS

    @property
    def no_reply_sender(self) -> bool:
        return self.sender_local.startswith(_NO_REPLY_PREFIXES)


def _is_bounce_subject(subject: str) -> bool:
    return not _REPLY_OR_FORWARD.match(subject) and bool(_BOUNCE_SUBJECT.search(subject))


def _is_report(msg: ParsedMessage) -> bool:
    return (msg.header("content-type") or "").lower().lstrip().startswith("multipart/report")


def _raw_address(value: str) -> str:
    """The address-like part of a From header mail-parser could not read ("MAILER-DAEMON")."""
    bracketed = re.search(r"<([^<>]*)>", value)
    inner = bracketed.group(1) if bracketed and bracketed.group(1).strip() else value
    words = inner.split()
    return words[0].strip("\"'").lower() if words else ""


def _local_part(address: str) -> str:
    return _NOT_ALNUM.sub("", (address.rpartition("@")[0] or address).lower())


def _report_evidence(msg: ParsedMessage, facts: _Facts) -> Iterator[_Evidence]:
    if _is_report(msg):
        match = _REPORT_TYPE.search(msg.header("content-type") or "")
        report_type = match.group(1).lower() if match else ""
        kind = {
            "delivery-status": MailKind.BOUNCE,
            "feedback-report": MailKind.FEEDBACK,
            "disposition-notification": MailKind.AUTO_REPLY,
        }.get(report_type, MailKind.NORMAL)
        yield _Evidence(kind, f"multipart/report; report-type={report_type or '?'}")
    for part in sorted(facts.part_types & (_DSN_PARTS | _FEEDBACK_PARTS | _MDN_PARTS)):
        kind = (
            MailKind.BOUNCE
            if part in _DSN_PARTS
            else MailKind.FEEDBACK
            if part in _FEEDBACK_PARTS
            else MailKind.AUTO_REPLY
        )
        yield _Evidence(kind, f"{part} part")
    if _JMRP_SUBJECT.match(facts.subject) and facts.part_types & _ORIGINAL_PARTS:
        yield _Evidence(MailKind.FEEDBACK, "complaint report with the original message")
    notification = _SES_NOTIFICATION.search(msg.text[:2000])
    if notification and facts.sender.endswith("amazonaws.com"):
        # A delivery notice is a DSN too, only a successful one.
        kind = MailKind.FEEDBACK if notification.group(1) == "Complaint" else MailKind.BOUNCE
        yield _Evidence(kind, f"Amazon SES {notification.group(1).lower()} notification")


def _bounce_evidence(msg: ParsedMessage, facts: _Facts) -> Iterator[_Evidence]:
    if facts.from_daemon:
        yield _Evidence(MailKind.BOUNCE, f"sent by {facts.sender}")
    if facts.from_postmaster:
        kind = MailKind.BOUNCE if _postmaster_bounce(msg, facts) else MailKind.NORMAL
        yield _Evidence(kind, f"sent by {facts.sender}")
    if facts.bounce_subject:
        kind = MailKind.BOUNCE if _machine_sent(msg, facts) else MailKind.NORMAL
        yield _Evidence(kind, f"subject looks like a bounce: {facts.subject[:80]!r}")
    if facts.null_return_path and facts.part_types & _ORIGINAL_PARTS:
        yield _Evidence(MailKind.BOUNCE, "null return path and a returned message")


def _postmaster_bounce(msg: ParsedMessage, facts: _Facts) -> bool:
    """Postmasters are also people; their mail needs a sign that no person wrote it."""
    if facts.null_return_path or facts.system_return_path:
        return True
    if facts.return_local is not None:
        return False
    return (
        facts.bounce_subject
        or bool(facts.part_types & _ORIGINAL_PARTS)
        or bool(_SMTP_ERROR.search(msg.text[:4000]))
    )


def _machine_sent(msg: ParsedMessage, facts: _Facts) -> bool:
    """Signs a person writing about a delivery problem would not produce."""
    return (
        facts.null_return_path
        or facts.system_return_path
        or facts.from_daemon
        or facts.from_postmaster
        or facts.no_reply_sender
        or _is_report(msg)
        or msg.header("x-failed-recipients") is not None
        or _auto_submitted(msg) is not None
    )


def _auto_reply_evidence(msg: ParsedMessage, facts: _Facts) -> Iterator[_Evidence]:
    auto_submitted = _auto_submitted(msg)
    if auto_submitted is not None:
        kind = _auto_submitted_kind(auto_submitted, facts.subject)
        yield _Evidence(kind, f"Auto-Submitted: {auto_submitted}")
    for name in _AUTOREPLY_MARKERS:
        value = msg.header(name)
        if value is not None and value.strip().lower() not in {"no", "false", "0"}:
            yield _Evidence(MailKind.AUTO_REPLY, f"{name}: {value.strip()[:40]}")
    if _list_manager_reply(msg):
        yield _Evidence(MailKind.AUTO_REPLY, "reply from the fml list manager")
    if (msg.header("x-autogenerated") or "").strip().lower() == "reply":
        yield _Evidence(MailKind.AUTO_REPLY, "X-Autogenerated: Reply")
    if _precedence(msg) == "auto_reply":
        yield _Evidence(MailKind.AUTO_REPLY, "Precedence: auto_reply")
    if _AUTOREPLY_SUBJECT.match(facts.subject):
        yield _Evidence(
            MailKind.AUTO_REPLY, f"subject of an automatic reply: {facts.subject[:80]!r}"
        )
    elif _absence_hint(facts.subject):
        yield _Evidence(
            MailKind.NORMAL, f"subject suggests an absence notice: {facts.subject[:80]!r}"
        )
    suppress = _suppressed(msg)
    if suppress:
        yield _Evidence(MailKind.NORMAL, f"X-Auto-Response-Suppress: {suppress}")


def _auto_submitted_kind(mode: str, subject: str) -> MailKind:
    """RFC 3834: ``auto-replied`` answers a mail; anything else (``auto-generated``: a ticket
    system's "incident assigned", a monitoring alert) was written for its own sake.

    Some absence notices say ``auto-generated``; their subject still gives them away.
    """
    if mode.startswith("auto-replied") or _AUTOREPLY_SUBJECT.match(subject):
        return MailKind.AUTO_REPLY
    return MailKind.AUTO_REPLY if _absence_hint(subject) else MailKind.AUTOMATIC


def _absence_hint(subject: str) -> bool:
    return not _REPLY_OR_FORWARD.match(subject) and bool(_VACATION_HINT.search(subject))


def _list_manager_reply(msg: ParsedMessage) -> bool:
    """fml's own answers (not a member, loop alert, command results), as opposed to posts.

    They carry no Auto-Submitted; a post to the list has its article number in X-Mail-Count.
    """
    server = (msg.header("x-mlserver") or "").strip().lower()
    return server.startswith("fml") and msg.header("x-mail-count") is None


def _list_evidence(msg: ParsedMessage) -> Iterator[_Evidence]:
    for name in _LIST_HEADERS:
        if msg.header(name) is not None:
            yield _Evidence(MailKind.LIST, name)
    precedence = _precedence(msg)
    if precedence in _PRECEDENCE_LIST:
        yield _Evidence(MailKind.LIST, f"Precedence: {precedence}")


def _loop_evidence(
    msg: ParsedMessage, facts: _Facts, own_addresses: frozenset[str], own_domains: frozenset[str]
) -> Iterator[_Evidence]:
    if facts.null_return_path:
        yield _Evidence(MailKind.NORMAL, "null return path")
    if facts.no_reply_sender:
        yield _Evidence(MailKind.NORMAL, f"sent by {facts.sender}")
    ours = {address.lower() for address in own_addresses}
    local, _, domain = facts.sender.partition("@")
    # Staff and customers may share our domain; only our own addresses (and their
    # +subaddresses) are us.
    if facts.sender in ours or f"{local.partition('+')[0]}@{domain}" in ours:
        yield _Evidence(MailKind.NORMAL, f"sent from our own address {facts.sender}")
    domains = frozenset(d.lower().lstrip("@") for d in own_domains)
    if is_our_message_id(msg.message_id, domains):
        yield _Evidence(MailKind.NORMAL, f"our own Message-ID {msg.message_id}")


def _spam_verdicts(msg: ParsedMessage) -> Iterator[str]:
    """What the receiving MTA's spam filter (SpamAssassin, rspamd) said, when it said spam.

    Answering spam automatically is backscatter to a forged sender; the mail itself is still
    kept, as filters are sometimes wrong. A sender adding such a header only silences our
    answers to themselves.
    """
    for name in ("X-Spam-Flag", "X-Spam"):
        value = (msg.header(name) or "").strip()
        if value.lower() in {"yes", "true"}:
            yield f"{name}: {value}"
    status = (msg.header("x-spam-status") or "").strip()
    if status.lower().startswith("yes"):
        yield f"X-Spam-Status: {status.split(',', 1)[0]}"
    result = (msg.header("x-spamd-result") or "").strip()
    if _RSPAMD_REJECT.match(result):  # rspamd says True only for "reject"
        yield f"X-Spamd-Result: {result.split(']', 1)[0][:60]}]"
    action = " ".join((msg.header("x-rspamd-action") or "").lower().split())
    if action in _RSPAMD_SPAM_ACTIONS:
        yield f"X-Rspamd-Action: {action}"


def _auto_submitted(msg: ParsedMessage) -> str | None:
    value = msg.header("auto-submitted")
    if value is None:
        return None
    mode = value.split(";", 1)[0].strip().lower()
    return None if mode == "no" else mode or "(empty)"


def _precedence(msg: ParsedMessage) -> str:
    value = msg.header("precedence") or msg.header("x-precedence") or ""
    return value.strip().lower()


def _suppressed(msg: ParsedMessage) -> str:
    """The X-Auto-Response-Suppress tokens that ask us not to answer automatically."""
    value = msg.header("x-auto-response-suppress") or ""
    tokens = {token.strip().lower() for token in value.split(",")}
    return ", ".join(sorted(tokens & _SUPPRESS_TOKENS))
