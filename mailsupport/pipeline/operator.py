"""Operator step: mail that proves it comes from an operator acts on its ticket.

A From header proves nothing (invariant 6). Mail counts as an operator's only when it comes
from one of their addresses AND arrives at the reply address we signed for that operator and
ticket, or carries our MTA's Authentication-Results with a DKIM/DMARC pass for the From domain.
Anything else from an operator's address (an inactive operator's too), and anything sent to an
operator's reply address by someone it was not signed for, to the comment address or in answer
to a mail only operators were sent, by anyone but an operator, fails: such mail runs nothing,
relays nothing and is never a customer's (``pipeline.unproven``), and the refusal is recorded
with its reason.

A reply address acts for ``[operators] reply_address_days`` after it was issued, and only under
the current reply key. An operator's mail to one that expired, or was signed with the key
since rotated away, is refused like any other; but it was once theirs, so the claim names the
operator to tell, with a fresh address to send it again to (``pipeline.staff_route``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.authres import verify_sender
from mailsupport.core.replyaddr import (
    ReplyTarget,
    day_number,
    is_expired,
    parse_reply_address,
    token_matches,
)
from mailsupport.db.models import Operator
from mailsupport.domain.operators import operator_by_address
from mailsupport.domain.settings import ReplyKeys, reply_keys
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import People
from mailsupport.pipeline.thread import referenced_ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What the mail's sender could prove about being an operator."""

    operator: Operator | None  # set only when proven
    # From a reply address: signed for the operator when proven; else only what it names.
    ticket_number: int | None
    evidence: str  # how it was proven, or why not
    to_comment_address: bool = False
    # Unproven by an address that was this operator's once (expired, or under a rotated key):
    # they are told, and given a fresh one.
    renew_for: Operator | None = None


def _recipients(incoming: Incoming) -> Iterable[str]:
    parsed = incoming.parsed
    yield from incoming.envelope_to
    yield from (a.email for a in (*parsed.to, *parsed.cc))
    for name in ("Delivered-To", "X-Original-To"):
        yield from (v.strip().strip("<>").lower() for v in parsed.header_all(name))


def _reply_targets(incoming: Incoming, config: Config) -> list[ReplyTarget]:
    targets = []
    for address in dict.fromkeys(_recipients(incoming)):
        base = config.base_address(address)
        target = parse_reply_address(address, base) if base else None
        if target is not None:
            targets.append(target)
    return targets


def prove_operator(
    session: Session, incoming: Incoming, people: People, config: Config, now: datetime
) -> Claim | None:
    """None when neither the sender nor a recipient has anything to do with operators."""
    targets = _reply_targets(incoming, config)
    named = targets[0].ticket_number if targets else None
    sender = people.sender
    if sender is None or sender.email not in people.operator_addresses:
        if targets:
            return Claim(None, named, "an operator's reply address, used by someone who is not one")
        if _to_comment_address(incoming, config):
            return Claim(None, None, "the comment address, used by someone who is not an operator")
        return _answering_operators_mail(session, incoming)
    operator = operator_by_address(session, sender.email)
    if operator is None:
        return Claim(None, named, "the address of an inactive operator")
    return _proof(session, incoming, operator, sender.email, targets, config, now)


def _signed_claim(
    target: ReplyTarget, operator: Operator, keys: ReplyKeys, config: Config, now: datetime
) -> Claim | None:
    """The claim of a reply address signed for ``operator``, still valid or not; None if not."""
    number = target.ticket_number
    if token_matches(target, operator.id, keys.current):
        lifetime = config.operators.reply_address_days
        if not is_expired(target, day_number(now), lifetime, keys.undated_day):
            return Claim(operator, number, "signed reply address")
        reason = f"reply address expired (it acts for {lifetime} days after it was sent)"
        return Claim(None, number, reason, renew_for=operator)
    if keys.previous is not None and token_matches(target, operator.id, keys.previous):
        reason = "reply address signed with a key since replaced (operators rotate-secret)"
        return Claim(None, number, reason, renew_for=operator)
    return None


def _to_comment_address(incoming: Incoming, config: Config) -> bool:
    address = config.support.comment_address
    return bool(address) and address in set(_recipients(incoming))


def _answering_operators_mail(session: Session, incoming: Incoming) -> Claim | None:
    """A claim for mail that answers a mail only operators were sent, from anyone else."""
    referenced = referenced_ticket(session, incoming)
    if referenced is None or not referenced.to_operators:
        return None
    return Claim(None, referenced.ticket.number, "an answer to a mail sent to operators only")


def _proof(
    session: Session,
    incoming: Incoming,
    operator: Operator,
    address: str,
    targets: list[ReplyTarget],
    config: Config,
    now: datetime,
) -> Claim:
    """What mail from ``address``, one of ``operator``'s, proves: a signed address, or DKIM."""
    comment = _to_comment_address(incoming, config)
    keys = reply_keys(session, config)
    for target in targets:
        claim = _signed_claim(target, operator, keys, config, now)
        if claim is not None:
            return replace(claim, to_comment_address=comment)
    if targets:
        return Claim(
            None, targets[0].ticket_number, "reply address not signed for this operator and ticket"
        )
    proof = verify_sender(
        incoming.parsed.headers,
        address,
        config.support.trusted_authserv_id,
        trusted=incoming.authres_trusted,
    )
    if proof.ok:
        return Claim(operator, None, proof.reason, comment)
    return Claim(None, None, f"no signed reply address; {proof.reason}")
