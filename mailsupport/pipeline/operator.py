"""Operator step: mail that proves it comes from an operator acts on its ticket.

A From header proves nothing (invariant 6). Mail counts as an operator's only when it comes
from one of their addresses AND arrives at the reply address we signed for that operator and
ticket, or carries our MTA's Authentication-Results with a DKIM/DMARC pass for the From domain.
Anything else from an operator's address goes on as a customer's mail would, runs nothing,
relays nothing, and the refusal is recorded with its reason.
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What the mail's sender could prove about being an operator."""

    operator: Operator | None  # set only when proven
    ticket_number: int | None  # from a signed reply address
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
    sender = people.sender
    known = sender is not None and sender.email in people.operator_addresses
    operator = operator_by_address(session, sender.email) if sender and known else None
    comment = bool(config.support.comment_address) and config.support.comment_address in set(
        _recipients(incoming)
    )
    if operator is None:
        if targets:
            return Claim(None, None, "an operator's reply address, used by someone who is not one")
        return None
    secret = server_secret(session, config)
    for target in targets:
        if token_matches(target, operator.id, secret):
            return Claim(operator, target.ticket_number, "signed reply address", comment)
    if targets:
        return Claim(None, None, "reply address not signed for this operator and ticket")
    proof = verify_sender(
        incoming.parsed.headers, sender.email if sender else "", config.support.trusted_authserv_id
    )
    if proof.ok:
        return Claim(operator, None, proof.reason, comment)
    return Claim(None, None, f"no signed reply address; {proof.reason}")
