"""A real SMTP server standing in for the relay: records what it accepts, fails on demand."""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> "550 ..." reply
    data_replies: deque[str] = field(default_factory=deque)  # next DATA replies, then 250
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.popleft()
            self.received.append(
                Received(
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    envelope.original_content or b"",
                )
            )
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """Start, stop and restart on one port, to play a relay that goes down and comes back."""

    def __init__(self, port: int = 0) -> None:
        self.handler = SinkHandler()
        self.port = port or free_port()
        self._controller: Controller | None = None
        self.connections = 0

    def start(self) -> Sink:
        sink = self

        class _Counting(SMTP):  # type: ignore[misc]
            def connection_made(self, transport: Any) -> None:
                sink.connections += 1
                super().connection_made(transport)

        class _Controller(Controller):  # type: ignore[misc]
            def factory(self) -> SMTP:
                return _Counting(self.handler, enable_SMTPUTF8=True)

        self._controller = _Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        self.connections = 0  # the controller's own readiness probe is not a client
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]
