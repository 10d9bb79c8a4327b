"""IMAP servers for the tests (from bench/imapd.py), and a second client acting on them.

The servers are shared with the benchmark, which must not import the tests, so they live in
bench/ and are loaded from there by path.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

_PATH = Path(__file__).resolve().parents[1] / "bench" / "imapd.py"
_SPEC = importlib.util.spec_from_file_location("imapd", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
imapd: Any = importlib.util.module_from_spec(_SPEC)
sys.modules["imapd"] = imapd
_SPEC.loader.exec_module(imapd)

_NAMES = itertools.count(1)


def unique_folder(prefix: str) -> str:
    """Folder names of their own for each test, so that tests can share one server."""
    return f"{prefix}{next(_NAMES)}"


class Remote:
    """Another client of the mailbox: the provider delivering mail, or a person reading it."""

    def __init__(self, server: Any) -> None:
        self.client = IMAPClient(server.host, server.port, ssl=False, timeout=30)
        self.client.login(server.user, server.password)

    def close(self) -> None:
        self.client.logout()

    def _release(self) -> None:
        # Not every server has UNSELECT, and CLOSE would expunge: looking at INBOX read-only
        # lets go of the folder without changing anything.
        self.client.select_folder("INBOX", readonly=True)

    def create(self, folder: str) -> None:
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)

    def append(self, folder: str, raw: bytes, flags: Sequence[bytes] = ()) -> None:
        self.client.append(folder, raw, flags=flags)

    def append_all(self, folder: str, mails: Iterable[bytes]) -> None:
        for raw in mails:
            self.append(folder, raw)

    def exists(self, folder: str) -> bool:
        return bool(self.client.folder_exists(folder))

    def messages(self, folder: str) -> dict[int, tuple[tuple[bytes, ...], bytes]]:
        """UID -> (flags, raw) of every message in the folder, read without changing them."""
        if not self.exists(folder):
            return {}
        self.client.select_folder(folder, readonly=True)
        uids = self.client.search(["ALL"])
        fetched = self.client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}
        self._release()
        return {
            int(uid): (tuple(data[b"FLAGS"]), bytes(data[b"BODY[]"]))
            for uid, data in fetched.items()
        }

    def count(self, folder: str) -> int:
        return len(self.messages(folder))

    def uidvalidity(self, folder: str) -> int:
        status = self.client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def recreate(self, folder: str) -> None:
        """Delete the folder and make it anew: the server gives it a new UIDVALIDITY."""
        self._release()
        self.client.delete_folder(folder)
        self.client.create_folder(folder)

    def mark(self, folder: str, uids: Sequence[int], flags: Sequence[bytes]) -> None:
        self.client.select_folder(folder)
        self.client.add_flags(list(uids), list(flags))
        self._release()


def imap_toml(accounts: Sequence[dict[str, Any]]) -> str:
    """``[[imap]]`` tables for a config file written by ``_fixtures.write_config``."""
    lines: list[str] = []
    for account in accounts:
        lines.append("\n[[imap]]")
        for key, value in account.items():
            if isinstance(value, str):
                rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                rendered = repr(value)
            lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"
