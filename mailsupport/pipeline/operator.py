"""Operator step: mail that proves it comes from an operator acts on its ticket.

A From header proves nothing (invariant 6). Mail counts as an operator's only when it comes
from one of their addresses AND arrives at the reply address we signed for that operator and
ticket, or carries our MTA's Authentication-Results with a DKIM/DMARC pass for the From domain.
Anything else from an operator's address (an inactive operator's too), and anything sent to an
operator's reply address by someone it was not signed for, to the comment address or in answer
to a mail only operators were sent, by anyone but an operator, fails: such mail runs nothing,
relays nothing and is never a customer's (``pipeline.unproven``), and the refusal is recorded
with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.authres import verify_sender
from mailsupport.core.replyaddr import ReplyTarget, parse_reply_address, token_matches
from mailsupport.db.models import Operator
from mailsupport.domain.operators import operator_by_address
from mailsupport.domain.settings import server_secret
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
    session: Session, incoming: Incoming, people: People, config: Config
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
    return _proof(session, incoming, operator, sender.email, targets, config)


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
) -> Claim:
    """What mail from ``address``, one of ``operator``'s, proves: a signed address, or DKIM."""
    comment = _to_comment_address(incoming, config)
    secret = server_secret(session, config)
    for target in targets:
        if token_matches(target, operator.id, secret):
            return Claim(operator, target.ticket_number, "signed reply address", comment)
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
