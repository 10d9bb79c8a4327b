"""The SMTP relay client: one reused connection, one reply code per recipient.

smtplib's ``sendmail`` raises on the first refusal and hides which recipients were accepted;
the outbox needs each recipient's own answer (5xx fails that recipient only, 4xx retries it),
so the SMTP transaction is driven command by command here.

While the relay reads our MAIL FROM, the caller may do some work of its own (``meanwhile``):
the outbox sender records the previous mail's result there, so the database and the relay work
at the same time and a mail is never handed over before the one before it is on record.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailsupport.config import RelayConfig

log = logging.getLogger(__name__)

Reply = tuple[int, str]
# An addr-spec with nothing to quote or parse: sent as it is, without smtplib's address parser.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


class RelayUnavailableError(Exception):
    """The relay could not be reached or dropped the connection; try again later."""


@dataclass(frozen=True)
class Delivery:
    """The relay's answer for each recipient of one message.

    ``retry_all`` is set when the relay refused the transaction itself (our sender address, a
    full queue): that is no verdict on the recipients, so all of them are retried.
    """

    replies: dict[str, Reply]
    retry_all: str = ""


def _path(address: str) -> str:
    """``<address>`` as MAIL FROM and RCPT TO take it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _text(message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return " ".join(text.split())[:500]


class Relay:
    """A connection to the configured relay, opened on first use and kept for reuse."""

    def __init__(self, config: RelayConfig, helo_name: str) -> None:
        self._config = config
        self._helo = helo_name
        self._client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        config = self._config
        try:
            if config.tls == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host,
                    config.port,
                    local_hostname=self._helo,
                    timeout=config.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(
                    config.host, config.port, local_hostname=self._helo, timeout=config.timeout
                )
            client.ehlo()
            if config.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if config.username:
                client.login(config.username, config.secret())
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayUnavailableError(f"relay {config.host}:{config.port}: {exc}") from exc
        return client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (OSError, smtplib.SMTPException):
                self._client.close()
            self._client = None

    def send(
        self,
        envelope_from: str,
        recipients: Sequence[str],
        raw: bytes,
        meanwhile: Callable[[], None] | None = None,
    ) -> Delivery:
        """One SMTP transaction; raises RelayUnavailableError when the connection fails.

        ``meanwhile`` is called once MAIL FROM is on its way, before its reply is read, so
        before any of the mail is sent. If it raises, the connection is dropped.
        """
        if self._client is None:
            self._client = self._connect()
        client = self._client
        try:
            return self._transaction(client, envelope_from, recipients, raw, meanwhile)
        except OSError as exc:  # smtplib's errors are OSErrors too
            self._drop(client)
            raise RelayUnavailableError(f"connection lost: {exc}") from exc
        except BaseException:
            self._drop(client)  # in the middle of a command: the connection is of no more use
            raise

    def _transaction(
        self,
        client: smtplib.SMTP,
        envelope_from: str,
        recipients: Sequence[str],
        raw: bytes,
        meanwhile: Callable[[], None] | None,
    ) -> Delivery:
        # Declared only for mail that needs it: ours is 7-bit MIME nearly always.
        eight_bit = not raw.isascii() and client.has_extn("8bitmime")
        client.putcmd("mail", f"FROM:{_path(envelope_from)}{' BODY=8BITMIME' if eight_bit else ''}")
        if meanwhile is not None:
            meanwhile()
        code, message = client.getreply()
        if code != 250:
            self._reset(client, code)
            return Delivery({}, retry_all=f"MAIL FROM refused: {code} {_text(message)}")
        replies: dict[str, Reply] = {}
        for recipient in recipients:
            client.putcmd("rcpt", f"TO:{_path(recipient)}")
            rcode, rmessage = client.getreply()
            replies[recipient] = (rcode, _text(rmessage))
        accepted = [r for r, (c, _) in replies.items() if c in (250, 251)]
        if not accepted:
            self._reset(client, 0)
            return Delivery(replies)
        dmessage: bytes | str
        try:
            dcode, dmessage = client.data(raw)
        except smtplib.SMTPDataError as exc:
            dcode, dmessage = exc.smtp_code, exc.smtp_error
        for recipient in accepted:
            replies[recipient] = (dcode, _text(dmessage))
        if dcode != 250:
            self._reset(client, dcode)
        return Delivery(replies)

    def _drop(self, client: smtplib.SMTP) -> None:
        client.close()
        if self._client is client:
            self._client = None

    def _reset(self, client: smtplib.SMTP, code: int) -> None:
        if code == 421:  # the server is closing the connection
            client.close()
            self._client = None
            return
        try:
            client.rset()
        except (OSError, smtplib.SMTPException):
            client.close()
            self._client = None


def helo_name(address: str) -> str:
    """The name we greet the relay with: our mail domain, else this host's name."""
    return address.rpartition("@")[2] or socket.getfqdn()
