"""The SMTP / LMTP listener: accepts mail for our addresses, answers 250 only once it is stored.

It never relays: RCPT is refused for any address that is not one of ours. Processing is not
done here; the pipeline picks stored mail up after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailsupport.config import Config
from mailsupport.db.inbox import RawMail
from mailsupport.errors import StorageError
from mailsupport.intake.writer import InboxWriter

log = logging.getLogger(__name__)

# RFC 5321 caps lines at 1000 octets, but real clients send longer ones; refusing them would
# lose mail, so lines are accepted up to this length (the message size limit still applies).
LONG_LINE_LIMIT = 1 << 20


class _SMTP(SMTP):
    line_length_limit = LONG_LINE_LIMIT


class _LMTP(LMTP):
    line_length_limit = LONG_LINE_LIMIT


def _quiet_protocol_log() -> None:
    """Keep aiosmtpd's per-command trace for debugging only.

    At INFO it logs five lines for every mail (each command and its arguments), which cost the
    listener about a tenth of its time under load and says less than the pipeline's one line
    per message. Its warnings and errors still show; ``-v`` brings the trace back.
    """
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("mail.log").setLevel(logging.WARNING)


def _address_only(address: str) -> str:
    return address.strip().strip("<>").lower()


class IntakeHandler:
    """aiosmtpd handler: recipient checks and store-before-250."""

    def __init__(self, config: Config, writer: InboxWriter, *, lmtp: bool) -> None:
        self._config = config
        self._writer = writer
        self._lmtp = lmtp

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._config.base_address(address) is None:
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        mail = RawMail(
            raw=raw,
            channel="lmtp" if self._lmtp else "smtp",
            envelope_from=envelope.mail_from,
            envelope_to=tuple(_address_only(a) for a in envelope.rcpt_tos),
        )
        try:
            stored = await self._writer.store(mail)
        except StorageError as exc:
            log.error("refused a message from %s with 451: %s", envelope.mail_from, exc)
            return self._reply(envelope, "451 4.3.0 Cannot store the message now; try again later")
        note = "duplicate, already stored" if stored.duplicate else "stored"
        return self._reply(envelope, f"250 2.0.0 OK: {note} as {stored.inbound_id}")

    def _reply(self, envelope: Envelope, line: str) -> str:
        # LMTP answers DATA once per accepted recipient (RFC 2033 section 4.2).
        if not self._lmtp:
            return line
        return "\r\n".join(line for _ in envelope.rcpt_tos)


class Listener:
    """The listening socket, served on the caller's event loop."""

    def __init__(self, config: Config, writer: InboxWriter) -> None:
        self._config = config
        self._handler = IntakeHandler(config, writer, lmtp=config.smtp.lmtp)
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> Any:
        cls = _LMTP if self._config.smtp.lmtp else _SMTP
        return cls(
            self._handler,
            data_size_limit=self._config.smtp.max_message_size,
            hostname=self._config.support.address.rsplit("@", 1)[1],
            ident="mailsupport",
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> tuple[str, int]:
        _quiet_protocol_log()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            host=self._config.smtp.host,
            port=self._config.smtp.port,
            family=socket.AF_UNSPEC,
            reuse_address=True,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("%s listener on %s:%s", "LMTP" if self._config.smtp.lmtp else "SMTP", host, port)
        return host, port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
