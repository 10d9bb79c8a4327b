"""The SMTP / LMTP listener: accepts mail for our addresses, answers 250 only once it is stored.

It never relays: RCPT is refused for any address that is not one of ours. Processing is not
done here; the pipeline picks stored mail up after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from mailsupport.config import Config, SmtpConfig
from mailsupport.core.authres import is_trusted_peer
from mailsupport.core.limits import CONTROL
from mailsupport.db.inbox import RawMail
from mailsupport.errors import ConfigError, StorageError
from mailsupport.intake.writer import InboxWriter

log = logging.getLogger(__name__)

# RFC 5321 caps lines at 1000 octets, but real clients send longer ones; refusing them would
# lose mail, so lines are accepted up to this length (the message size limit still applies).
LONG_LINE_LIMIT = 1 << 20


# DATA ends with a line holding a single dot. Searching the stream for the dot line and looking
# at what precedes it lets a whole run of lines be taken at once.
_DOT_LINE = b".\r\n"
_END = b"\r\n" + _DOT_LINE
_UNEXPECTED = "421 4.3.0 Local error in processing; try again later"
_TOO_MANY = b"421 4.7.0 Too many connections; try again later\r\n"
_TOO_MANY_FROM_YOU = b"421 4.7.0 Too many connections from your address; try again later\r\n"
_IDLE = b"421 4.4.2 Idle for too long; closing the connection\r\n"

# asyncio accepts up to this many connections at each wake-up before any is looked at, so as
# many files again as the sessions may be open for a moment.
ACCEPT_BURST = 100
# Files the daemon holds besides its sessions: database files, worker pipes, logs, the loop.
RESERVED_FILES = 64


class Admission:
    """The sessions open now, in all and by client address; used on the listener's loop only."""

    def __init__(self, smtp: SmtpConfig) -> None:
        self._limit = smtp.max_connections
        self._per_address = smtp.max_connections_per_ip
        self._open = 0
        self._by_address: dict[str, int] = {}
        self._refusing = False

    def admit(self, address: str) -> bytes | None:
        """Count a new session in; or the 421 that refuses it, counting nothing."""
        if self._open >= self._limit:
            if not self._refusing:
                log.warning("%d sessions open: refusing new ones with 421", self._open)
                self._refusing = True
            return _TOO_MANY
        if self._by_address.get(address, 0) >= self._per_address:
            log.info(
                "%d sessions open from %s: refused another with 421", self._per_address, address
            )
            return _TOO_MANY_FROM_YOU
        self._open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self._open -= 1
        left = self._by_address.pop(address) - 1
        if left:
            self._by_address[address] = left
        if self._refusing and self._open < self._limit:
            log.info("%d sessions open: accepting again", self._open)
            self._refusing = False


class _Section:
    """A DATA section as it is read: its blocks, and the first limit it broke, if any."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self._size_limit = size_limit
        self._longest = line_limit - 2  # longest line content, without its CRLF
        self._blocks: list[bytes] = []
        self._size = 0
        self._line_start = 0  # where, in the section, the line not yet ended began
        self.error: str | None = None

    def add(self, block: bytes) -> None:
        offset = self._size
        self._size += len(block)
        if self.error is None:
            self.error = self._first_error(block, offset)
        if self.error is None:
            self._blocks.append(self._unstuffed(block, at_line_start=offset == self._line_start))
        else:
            self._blocks.clear()  # refused: keep nothing of it, as aiosmtpd does
        last = block.rfind(b"\r\n")
        if last >= 0:
            self._line_start = offset + last + 2

    @staticmethod
    def _unstuffed(block: bytes, *, at_line_start: bool) -> bytes:
        """The block with the dot that starts any line removed (RFC 5321 section 4.5.2).

        Done block by block, so that the whole message is never held twice over; no block
        ends between a CR and its LF, so only a dot that begins one can follow a line end.
        """
        if at_line_start and block.startswith(b"."):
            block = block[1:]
        return block.replace(b"\r\n.", b"\r\n")

    def content(self) -> bytes:
        """The message as sent, dot-stuffing undone."""
        data = b"".join(self._blocks)
        self._blocks.clear()
        return data

    def _first_error(self, block: bytes, offset: int) -> str | None:
        # aiosmtpd reads line by line and answers for whichever limit the stream broke first.
        too_long = self._long_line_at(block, offset)
        too_much = None
        if self._size_limit and self._size > self._size_limit:
            too_much = self._size_limit + 1
        if too_long is not None and (too_much is None or too_long < too_much):
            return "500 Line too long (see RFC5321 4.5.3.1.6)"
        if too_much is not None:
            return "552 Error: Too much mail data"
        return None

    def _long_line_at(self, block: bytes, offset: int) -> int | None:
        """Where a line of this block grew too long, counted from the start of the section."""
        first = block.find(b"\r\n")
        continued_end = offset + (first if first >= 0 else len(block))
        if continued_end - self._line_start > self._longest:
            return self._line_start + self._longest + 1
        if first < 0 or len(block) - first - 2 <= self._longest:
            return None  # no room after the first line end for a whole line that is too long
        rest = first + 2
        if len(block) - rest < 2 * self._longest + 2:
            return self._only_long_line_at(block, rest, offset)
        start = offset + rest
        for line in block[rest:].split(b"\r\n"):
            if len(line) > self._longest:
                return start + self._longest + 1
            start += len(line) + 2
        return None

    def _only_long_line_at(self, block: bytes, rest: int, offset: int) -> int | None:
        """The long line after ``rest``, in a block with room for at most one.

        Such a line covers the middle of what follows ``rest``: one search there tells whether
        there is one, where splitting the block made a string of each of its short lines.
        """
        low, high = len(block) - self._longest - 1, rest + self._longest + 1
        if block.find(b"\r\n", low, high) >= 0:
            return None
        line_start = block.rfind(b"\r\n", rest, low + 1)
        line_start = rest if line_start < 0 else line_start + 2
        line_end = block.find(b"\r\n", high - 1)
        line_end = len(block) if line_end < 0 else line_end
        if line_end - line_start > self._longest:
            return offset + line_start + self._longest + 1
        return None


class _BlockData(SMTP):
    """aiosmtpd with the DATA section read in blocks rather than line by line.

    aiosmtpd takes several Python steps for every line of a message, which on mail of 50 KB
    was most of the listener's time. This reads up to each dot line at once and keeps
    aiosmtpd's answers: 552 for too much data and 500 for a line over the limit, both once
    the whole section is read (in LMTP, once per recipient like every reply to DATA), and the
    handler's DATA hook and its reply otherwise.
    """

    line_length_limit = LONG_LINE_LIMIT

    def __init__(self, *args: Any, admission: Admission, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admission = admission
        self._client: str | None = None  # the address counted in, while the session is open
        self._in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._client is not None:  # STARTTLS: the same session goes on
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        refusal = self._admission.admit(client)
        if refusal is not None:
            # Refused before aiosmtpd sees it: no session, no task, and the file is closed at
            # the loop's next turn.
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal)
            transport.close()
            return
        self._client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is None:
            return  # refused in connection_made
        self._admission.release(self._client)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._in_data:
            # A mail is read to its end before anything answers; a client still sending it is
            # not idle, however long the whole of it takes.
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        # aiosmtpd closes silently; RFC 5321 section 4.2.2 answers 421 first, and the client
        # knows to try again.
        if self.transport is not None:
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(_IDLE)
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # unannotated in aiosmtpd

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        try:
            section = await self._read_section()
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        finally:
            self._in_data = False
        if section.error is not None:
            await self._refuse_data(section.error)
            return
        await self._deliver(section.content())

    async def _read_section(self) -> _Section:
        section = _Section(self.data_size_limit, self.line_length_limit)
        at_line_start = True  # DATA begins a line, and so does whatever follows a CRLF
        while True:
            try:
                block = await self._reader.readuntil(_DOT_LINE)
            except asyncio.LimitOverrunError as exc:
                # No dot line within the reader's limit: take what cannot be part of one.
                block = await self._reader.read(exc.consumed)
                if block.endswith(b"\r"):
                    # The reader stops two bytes short of what it holds, so this may cut a
                    # CRLF in two. Lines are found by their CRLF, in one block: a cut one would
                    # hide the dot line that follows it and join the lines on either side.
                    block += await self._reader.readexactly(1)
            else:
                if block.endswith(_END) or (at_line_start and block == _DOT_LINE):
                    section.add(block[: -len(_DOT_LINE)])
                    return section
            section.add(block)
            at_line_start = block.endswith(b"\r\n")

    async def _deliver(self, original_content: bytes) -> None:
        """Hand the message to the handler's DATA hook and send its reply, as aiosmtpd does."""
        assert self.envelope is not None
        content: str | bytes = original_content
        if self._decode_data:
            try:
                content = original_content.decode(
                    "utf-8" if self.enable_SMTPUTF8 else "ascii",
                    "surrogateescape" if self.enable_SMTPUTF8 else "strict",
                )
            except UnicodeDecodeError:
                await self._refuse_data("500 Error: strict ASCII mode")
                return
        self.envelope.content = content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._end_transaction()
        await self.push("250 OK" if status is MISSING else status)

    async def _refuse_data(self, line: str) -> None:
        """Refuse the message with a reply of our own, which ends its transaction."""
        assert self.envelope is not None
        reply = _data_reply(line, self.envelope, lmtp=isinstance(self, LMTP))
        self._end_transaction()
        await self.push(reply)

    def _end_transaction(self) -> None:
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # unannotated in aiosmtpd

    async def handle_exception(self, error: Exception) -> str:
        """A failure of ours is never the sender's fault: 421, and the connection is closed.

        aiosmtpd answers 500, on which the sending server bounces the mail. A 421 makes it keep
        the mail and try again later; closing leaves no half-read DATA to be taken for commands,
        and LMTP clients read it as the answer for every recipient.
        """
        peer = self.session.peer if self.session is not None else None
        log.error("session with %s failed; answered 421", peer, exc_info=error)
        if self.transport is not None:
            # Run after the reply is written: close() still sends what the transport holds.
            asyncio.get_running_loop().call_soon(self.transport.close)
        return _UNEXPECTED


class _SMTP(_BlockData):
    pass


class _LMTP(_BlockData, LMTP):
    pass


def _quiet_protocol_log() -> None:
    """Keep aiosmtpd's per-command trace for debugging only.

    At INFO it logs five lines for every mail (each command and its arguments), which cost the
    listener about a tenth of its time under load and says less than the pipeline's one line
    per message. Its warnings and errors still show; ``-v`` brings the trace back.
    """
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("mail.log").setLevel(logging.WARNING)


def _data_reply(line: str, envelope: Envelope, *, lmtp: bool) -> str:
    """The reply to the end of DATA: LMTP gives it once per accepted recipient, refusals
    included (RFC 2033 section 4.2), and its client waits until it has them all."""
    if not lmtp:
        return line
    return "\r\n".join(line for _ in envelope.rcpt_tos)


def _address_only(address: str) -> str:
    return address.strip().strip("<>").lower()


class IntakeHandler:
    """aiosmtpd handler: recipient checks and store-before-250."""

    def __init__(self, config: Config, writer: InboxWriter, *, lmtp: bool) -> None:
        self._config = config
        self._writer = writer
        self._lmtp = lmtp

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # No address holds a control character; PostgreSQL cannot even store a NUL, and the
        # failed insert would have answered 451 to every mail stored in the same commit.
        if CONTROL.search(address):
            return "501 5.1.7 Bad sender address syntax"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._config.base_address(address) is None:
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail = RawMail(
            raw=raw,
            channel="lmtp" if self._lmtp else "smtp",
            envelope_from=envelope.mail_from,
            envelope_to=tuple(_address_only(a) for a in envelope.rcpt_tos),
            authres_trusted=self._from_trusted_relay(session),
        )
        try:
            stored = await self._writer.store(mail)
        except StorageError as exc:
            log.error("refused a message from %s with 451: %s", envelope.mail_from, exc)
            return self._reply(envelope, "451 4.3.0 Cannot store the message now; try again later")
        note = "duplicate, already stored" if stored.duplicate else "stored"
        return self._reply(envelope, f"250 2.0.0 OK: {note} as {stored.inbound_id}")

    def _reply(self, envelope: Envelope, line: str) -> str:
        return _data_reply(line, envelope, lmtp=self._lmtp)

    def _from_trusted_relay(self, session: Session) -> bool:
        """Whether the client is our MTA: only then are the mail's Authentication-Results its."""
        peer = session.peer
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        return is_trusted_peer(host, self._config.support.trusted_relays)


class Listener:
    """The listening socket, served on the caller's event loop."""

    def __init__(self, config: Config, writer: InboxWriter) -> None:
        self._config = config
        self._handler = IntakeHandler(config, writer, lmtp=config.smtp.lmtp)
        self._admission = Admission(config.smtp)
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> Any:
        cls = _LMTP if self._config.smtp.lmtp else _SMTP
        return cls(
            self._handler,
            admission=self._admission,
            data_size_limit=self._config.smtp.max_message_size,
            hostname=self._config.support.address.rsplit("@", 1)[1],
            ident="mailsupport",
            enable_SMTPUTF8=True,
            timeout=self._config.smtp.idle_timeout,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> tuple[str, int]:
        _quiet_protocol_log()
        ensure_open_files(self._config.smtp)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            host=self._config.smtp.host,
            port=self._config.smtp.port,
            family=socket.AF_UNSPEC,
            reuse_address=True,
            backlog=ACCEPT_BURST,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("%s listener on %s:%s", "LMTP" if self._config.smtp.lmtp else "SMTP", host, port)
        return host, port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def ensure_open_files(smtp: SmtpConfig) -> None:
    """Refuse to start when a session the listener admits might find no file to use.

    Past the limit, accept() fails and asyncio stops listening for a second at a time, which
    refuses everyone. The limit is not raised here: the systemd unit's system call filter
    forbids it, and its LimitNOFILE is where the number belongs.
    """
    needed = smtp.max_connections + ACCEPT_BURST + RESERVED_FILES
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigError(
            f"Invalid config: smtp.max_connections = {smtp.max_connections} needs {needed} open"
            f" files, but the daemon may open only {soft}; raise its limit (LimitNOFILE,"
            " ulimit -n) or lower smtp.max_connections."
        )
