"""Configuration: one TOML file, environment overrides for secrets, validated at start.

Every problem is reported as one sentence naming the offending key, so an admin who mistyped
a line sees exactly which one.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mailsupport.errors import ConfigError

CONFIG_ENV = "MAILSUPPORT_CONFIG"
_ENV_PREFIX = "MAILSUPPORT_"
# Variables of ours that are not config keys: the config file, and the test suite's own.
_OTHER_VARIABLES = frozenset({CONFIG_ENV, "MAILSUPPORT_TEST_PG_URL", "MAILSUPPORT_CORPUS"})
_IMAP_PASSWORD_RE = re.compile(r"^MAILSUPPORT_IMAP_[A-Z0-9_]+_PASSWORD$")
_ADDRESS_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_QUEUE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IDLE_REFRESH_MAX = 1500.0  # seconds: well inside the 29 minutes after which servers end IDLE
INSTANCE_MAX = 200  # characters of daemon.instance, stored with every claim
_PASSWORD_RE = re.compile(r"(//[^/:@]*):[^/@]*@")
LANGUAGES = ("en", "ru")


def read_secret(value: str, file: str, key: str) -> str:
    """A password given inline, or read (at use, so it can be rotated) from ``file``."""
    if not file:
        return value
    try:
        return Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"Cannot read {key}: {exc}.") from exc


@dataclass(frozen=True)
class SupportConfig:
    name: str = "ACME Support"
    address: str = "support@example.com"
    tag: str = "ACME"
    default_queue: str = "support"
    language: str = "en"
    # Key for signed addresses (bounce and reply addresses). Better given as
    # MAILSUPPORT_SUPPORT_SECRET; when empty, one is generated and kept in the database.
    secret: str = ""
    # Mail to this address (from a proven operator) is an internal note, never relayed.
    comment_address: str = ""
    # The authserv-id of our receiving MTA's Authentication-Results header. A DKIM or DMARC
    # pass it reports for the From domain proves an operator's identity; empty: only signed
    # reply addresses do.
    trusted_authserv_id: str = ""
    # Peers (IP addresses or networks) of the SMTP/LMTP listener that are our MTA: only mail
    # they hand over (and mail from the gateway) may prove anything by Authentication-Results.
    trusted_relays: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///mailsupport.db"
    busy_timeout: float = 5.0  # seconds a writer waits for SQLite's lock before giving up


@dataclass(frozen=True)
class SmtpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8025
    lmtp: bool = False
    max_message_size: int = 26_214_400
    # Each session holds an open file: beyond these the listener answers 421 and closes, so
    # idle or hostile clients cannot take every file the process may open.
    max_connections: int = 500
    max_connections_per_ip: int = 50
    idle_timeout: float = 60.0  # seconds a session may wait between commands (or DATA lines)


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 25
    tls: str = "none"  # none | starttls | ssl (implicit TLS, usually port 465)
    username: str = ""
    password: str = ""  # better: MAILSUPPORT_RELAY_PASSWORD or password_file
    password_file: str = ""
    timeout: float = 30.0

    def secret(self) -> str:
        """The relay password, read from password_file when one is named."""
        return read_secret(self.password, self.password_file, "relay.password_file")


@dataclass(frozen=True)
class OutboundConfig:
    give_up_after_hours: float = 96.0  # retry temporary failures this long (4 days, as MTAs do)
    retry_initial_seconds: float = 60.0  # first retry delay, doubling up to the maximum
    retry_max_seconds: float = 3600.0
    send_interval: float = 10.0  # seconds between outbox sweeps when nothing new was queued


@dataclass(frozen=True)
class NotificationsConfig:
    # Status changes that send the customer a notice; a change the customer caused
    # themselves (their reply reopening a ticket) never does.
    statuses: tuple[str, ...] = ("open", "waiting", "resolved", "closed")
    # Changes within this many seconds are combined into one notice with the final status.
    combine_seconds: float = 60.0
    templates_dir: str = ""  # a directory whose templates override the shipped ones


@dataclass(frozen=True)
class LimitsConfig:
    # Automatic mails (acknowledgements, notices) to one address: a loop breaker for what
    # the headers do not reveal.
    auto_replies_per_hour: int = 10
    auto_replies_per_day: int = 40
    hard_bounces_before_stop: int = 3  # after this many hard bounces an address gets no mail
    # Loops between people's auto-responders, which no header reveals, counted over a window
    # of this many minutes: a sender's mail repeating a text it already sent this many times
    # is treated as automatic, and a ticket gets at most so many relayed replies, and each of
    # its operators so many notifications.
    loop_window: int = 60
    repeats_before_suppress: int = 1
    relays_per_ticket_per_window: int = 10
    notifications_per_ticket_per_window: int = 10


@dataclass(frozen=True)
class PipelineConfig:
    # Processes turning stored mail into tickets; 0 for a daemon that only accepts mail while
    # others (sharing a PostgreSQL database) process it.
    workers: int = 1
    poll_interval: float = 2.0  # seconds between backlog checks when nothing signals new mail
    # Automatic mail that is no bounce or auto-reply (Auto-Submitted: auto-generated, such as a
    # ticket system's notices) and matches no ticket: "ticket" opens one, "drop" keeps it aside.
    automatic_mail: str = "ticket"
    # A worker still on one message after this many seconds is killed, as one that died.
    message_timeout: float = 60.0
    # A message in hand when its worker died this many times is quarantined.
    deaths_before_quarantine: int = 3
    worker_memory_limit: int = 0  # megabytes of address space for each worker; 0: no limit


@dataclass(frozen=True)
class OperatorsConfig:
    # A signed reply address acts for this many days after the mail that carried it was sent.
    reply_address_days: int = 90


@dataclass(frozen=True)
class DaemonConfig:
    # Who this daemon is across its restarts; empty: the host name and the config file (or,
    # without one, the database). A daemon started again frees at once what the one before
    # it held, so no two daemons running at once may share it.
    instance: str = ""


IMAP_AFTER_HELP = "must be move:<folder>, flag or delete"


@dataclass(frozen=True)
class ImapAccount:
    """A mailbox at a provider whose mail the daemon takes in (``[[imap]]``)."""

    name: str
    host: str
    username: str
    port: int = 993
    tls: str = "ssl"  # ssl (implicit TLS) | starttls | none
    # Better: MAILSUPPORT_IMAP_<NAME>_PASSWORD or password_file.
    password: str = field(default="", repr=False)
    password_file: str = ""
    folder: str = "INBOX"
    queue: str = ""  # every mail of the account opens tickets here; empty: routed by address
    after: str = "move:Processed"  # what is done on the server once a mail is stored
    address: str = ""  # the mailbox's own address, recorded as the mail's envelope recipient
    # IDLE is re-issued this often: servers may drop it after 29 minutes, routers forget quiet
    # connections sooner, and a refresh that gets no answer within ``timeout`` is how a
    # silently dead connection is noticed.
    idle_refresh: float = 120.0
    poll_interval: float = 60.0  # seconds between checks on a server without IDLE
    timeout: float = 30.0  # seconds any one command may take before the connection is dropped
    # Whether the provider's Authentication-Results may prove an operator (see README).
    trust_authentication_results: bool = False

    @property
    def after_action(self) -> str:
        """``move``, ``flag`` or ``delete``."""
        return self.after.partition(":")[0]

    @property
    def after_folder(self) -> str:
        """The folder mail is moved to (empty unless the action is ``move``)."""
        return self.after.partition(":")[2]

    def secret(self) -> str:
        """The password, read from password_file when one is named."""
        return read_secret(self.password, self.password_file, f"imap {self.name} password_file")


def _without_extension(address: str) -> str | None:
    """``local+extension@domain`` as ``local@domain``, lower-cased; None without an "@"."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if at else None


@dataclass(frozen=True)
class Config:
    support: SupportConfig = field(default_factory=SupportConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
    queues: Mapping[str, str] = field(default_factory=dict)  # extra address -> queue name
    imap: tuple[ImapAccount, ...] = ()
    source: str = "built-in defaults"
    path: str = ""  # the config file, absolute; empty for a config built in memory

    @property
    def instance(self) -> str:
        """``daemon.instance``, or the host name and the config file (else the database)."""
        if self.daemon.instance:
            return self.daemon.instance
        where = self.path or _PASSWORD_RE.sub(r"\1@", self.database.url)
        name = f"{socket.gethostname()}:{where}"
        if len(name) <= INSTANCE_MAX:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return f"{name[: INSTANCE_MAX - 17]}~{digest}"

    @property
    def support_addresses(self) -> frozenset[str]:
        """Every address that accepts mail: the support address, queues, the comment address."""
        comment = {self.support.comment_address} if self.support.comment_address else set()
        return frozenset({self.support.address, *self.queues, *comment})

    def base_address(self, address: str) -> str | None:
        """Which of our addresses this is, ignoring a ``+extension``; None when not ours.

        Bounces come back to ``support+bounce-...@`` and replies may go to signed
        ``support+1042-...@`` addresses, so every subaddress of ours is ours.
        """
        base = _without_extension(address)
        return base if base in self.support_addresses else None

    def own_address_key(self, address: str) -> str | None:
        """The config key that makes ``address`` (any ``+extension`` aside) one that mail is
        taken in at, IMAP accounts included; None when it is nobody's here."""
        keys = {queue: f"queues.{queue}" for queue in self.queues}
        keys.update((a.address, f"imap[{i}].address") for i, a in enumerate(self.imap) if a.address)
        if self.support.comment_address:
            keys[self.support.comment_address] = "support.comment_address"
        keys[self.support.address] = "support.address"
        base = _without_extension(address)
        return keys.get(base) if base is not None else None

    def queue_for(self, address: str) -> str | None:
        """The queue an address routes to, or None when it is not one of ours."""
        address = self.base_address(address) or ""
        if address in self.queues:
            return self.queues[address]
        if address == self.support.address:
            return self.support.default_queue
        return None

    def address_for_queue(self, queue: str) -> str:
        """The address customers of a queue write to (and our mail about it comes from)."""
        for address, name in sorted(self.queues.items()):
            if name == queue:
                return address
        return self.support.address

    @property
    def own_domains(self) -> frozenset[str]:
        return frozenset(a.rsplit("@", 1)[1] for a in self.support_addresses)


# --- validators: each returns the clean value or raises ValueError("must ...") -------------


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _address(value: Any) -> str:
    text = _string(value).lower()
    if not _ADDRESS_RE.match(text):
        raise ValueError("must be an email address like support@example.com")
    return text


def _optional_address(value: Any) -> str:
    return _address(value) if isinstance(value, str) and value.strip() else ""


def _tag(value: Any) -> str:
    text = _string(value)
    if not _TAG_RE.match(text):
        raise ValueError("must be 1-32 letters, digits, dots, dashes or underscores")
    return text


def _queue(value: Any) -> str:
    text = _string(value)
    if not _QUEUE_RE.match(text):
        raise ValueError("must be a lower-case queue name (letters, digits, . _ -)")
    return text


def _language(value: Any) -> str:
    text = _string(value)
    if text not in LANGUAGES:
        raise ValueError(f"must be one of {', '.join(LANGUAGES)}")
    return text


def _db_url(value: Any) -> str:
    text = _string(value)
    if not text.startswith(("sqlite", "postgresql")):
        raise ValueError("must be an sqlite:/// or postgresql+psycopg:// URL")
    return text


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("must be an integer from 0 to 65535")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be an integer, 0 or more")
    return value


def _is_number(value: Any) -> bool:
    # TOML and float() both read nan and inf; nan passes every comparison a range check makes.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_float(value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise ValueError("must be a positive number")
    return float(value)


def _optional_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip()


def _non_negative_float(value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise ValueError("must be a number, 0 or more")
    return float(value)


def _choice(*choices: str) -> Validator:
    def validate(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return validate


STATUSES = ("new", "open", "waiting", "resolved", "closed")


def _statuses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(v in STATUSES for v in value):
        raise ValueError(f"must be a list of statuses from {', '.join(STATUSES)}")
    return tuple(value)


def _instance(value: Any) -> str:
    text = _optional_string(value)
    if len(text) > INSTANCE_MAX or any(not c.isprintable() for c in text):
        raise ValueError(f"must be at most {INSTANCE_MAX} printable characters")
    return text


def _networks(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('must be a list of IP addresses or networks, e.g. ["127.0.0.1"]')
    networks = []
    for text in value:
        try:
            networks.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"must hold IP addresses or networks; {text!r} is neither") from None
    return tuple(networks)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Validator = Callable[[Any], Any]

_SCHEMA: dict[str, tuple[type[Any], dict[str, Validator]]] = {
    "support": (
        SupportConfig,
        {
            "name": _string,
            "address": _address,
            "tag": _tag,
            "default_queue": _queue,
            "language": _language,
            "secret": _optional_string,
            "comment_address": _optional_address,
            "trusted_authserv_id": _optional_string,
            "trusted_relays": _networks,
        },
    ),
    "database": (DatabaseConfig, {"url": _db_url, "busy_timeout": _positive_float}),
    "smtp": (
        SmtpConfig,
        {
            "enabled": _boolean,
            "host": _string,
            "port": _port,
            "lmtp": _boolean,
            "max_message_size": _positive_int,
            "max_connections": _positive_int,
            "max_connections_per_ip": _positive_int,
            "idle_timeout": _positive_float,
        },
    ),
    "relay": (
        RelayConfig,
        {
            "host": _string,
            "port": _port,
            "tls": _choice("none", "starttls", "ssl"),
            "username": _optional_string,
            "password": _optional_string,
            "password_file": _optional_string,
            "timeout": _positive_float,
        },
    ),
    "outbound": (
        OutboundConfig,
        {
            "give_up_after_hours": _positive_float,
            "retry_initial_seconds": _positive_float,
            "retry_max_seconds": _positive_float,
            "send_interval": _positive_float,
        },
    ),
    "notifications": (
        NotificationsConfig,
        {
            "statuses": _statuses,
            "combine_seconds": _non_negative_float,
            "templates_dir": _optional_string,
        },
    ),
    "limits": (
        LimitsConfig,
        {
            "auto_replies_per_hour": _positive_int,
            "auto_replies_per_day": _positive_int,
            "hard_bounces_before_stop": _positive_int,
            "loop_window": _positive_int,
            "repeats_before_suppress": _positive_int,
            "relays_per_ticket_per_window": _positive_int,
            "notifications_per_ticket_per_window": _positive_int,
        },
    ),
    "pipeline": (
        PipelineConfig,
        {
            "workers": _non_negative_int,
            "poll_interval": _positive_float,
            "automatic_mail": _choice("ticket", "drop"),
            "message_timeout": _positive_float,
            "deaths_before_quarantine": _positive_int,
            "worker_memory_limit": _non_negative_int,
        },
    ),
    "daemon": (DaemonConfig, {"instance": _instance}),
    "operators": (OperatorsConfig, {"reply_address_days": _positive_int}),
}


def _account_name(value: Any) -> str:
    text = _string(value)
    if not _ACCOUNT_RE.match(text):
        raise ValueError("must be 1-64 letters, digits, dots, dashes or underscores")
    return text


def _imap_after(value: Any) -> str:
    text = _string(value)
    action, colon, folder = text.partition(":")
    if text in ("flag", "delete"):
        return text
    if action == "move" and colon and folder.strip():
        return f"move:{folder.strip()}"
    raise ValueError(IMAP_AFTER_HELP)


def _idle_refresh(value: Any) -> float:
    seconds = _positive_float(value)
    if seconds > IDLE_REFRESH_MAX:
        raise ValueError(
            f"must be at most {IDLE_REFRESH_MAX:.0f} seconds (servers end IDLE after 29 minutes)"
        )
    return seconds


_IMAP_FIELDS: dict[str, Validator] = {
    "name": _account_name,
    "host": _string,
    "port": _port,
    "tls": _choice("ssl", "starttls", "none"),
    "username": _string,
    "password": _optional_string,
    "password_file": _optional_string,
    "folder": _string,
    "queue": _queue,
    "after": _imap_after,
    "address": _optional_address,
    "idle_refresh": _idle_refresh,
    "poll_interval": _positive_float,
    "timeout": _positive_float,
    "trust_authentication_results": _boolean,
}
_IMAP_REQUIRED = ("name", "host", "username")

_ENV_TRUE = frozenset({"true", "yes", "on", "1"})
_ENV_FALSE = frozenset({"false", "no", "off", "0"})


def _env_boolean(text: str) -> bool:
    # Only the usual spellings: read as false, a typo would silently turn a feature off.
    word = text.strip().lower()
    if word not in _ENV_TRUE | _ENV_FALSE:
        raise ValueError("must be true or false (or yes/no, on/off, 1/0)")
    return word in _ENV_TRUE


def _env_number(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_number(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            return text  # not a number: the validator refuses it, saying what it must be

    return parse_number


_ENV_PARSERS: dict[Validator, Callable[[str], Any]] = {
    _port: _env_number(int),
    _positive_int: _env_number(int),
    _non_negative_int: _env_number(int),
    _positive_float: _env_number(float),
    _non_negative_float: _env_number(float),
    _statuses: lambda text: [v.strip() for v in text.split(",") if v.strip()],
    _networks: lambda text: [v.strip() for v in text.split(",") if v.strip()],
    _boolean: _env_boolean,
}


def _env_name(section: str, key: str) -> str:
    return f"{_ENV_PREFIX}{section.upper()}_{key.upper()}"


def _env_value(section: str, key: str, validator: Validator, text: str) -> Any:
    """The value of an environment override, or one sentence naming the variable and the key."""
    try:
        return validator(_ENV_PARSERS.get(validator, str)(text))
    except ValueError as exc:
        raise ConfigError(
            f"Invalid environment variable {_env_name(section, key)} ({section}.{key}): {exc}."
        ) from exc


def _check_environment(env: Mapping[str, str]) -> None:
    """Refuse a MAILSUPPORT_ variable that overrides nothing: a typo would be ignored silently."""
    known = {_env_name(s, key) for s, (_cls, fields) in _SCHEMA.items() for key in fields}
    for name in sorted(env):
        if not name.startswith(_ENV_PREFIX) or name in known | _OTHER_VARIABLES:
            continue
        if _IMAP_PASSWORD_RE.match(name):
            continue
        raise ConfigError(f"Unknown environment variable {name} ({_unknown_because(name, known)}).")


def _unknown_because(name: str, known: set[str]) -> str:
    suffix = name.removeprefix(_ENV_PREFIX)
    section, _, key = suffix.lower().partition("_")
    if section in _SCHEMA:
        reason = f"no config key {section}.{key}"
    elif section in ("queues", "imap"):
        reason = f"[{section}] is not set from the environment"
    else:
        reason = f"no config section [{section}]"
    # Compared without the prefix, which every candidate shares.
    candidates = {v.removeprefix(_ENV_PREFIX): v for v in known | _OTHER_VARIABLES}
    close = difflib.get_close_matches(suffix, sorted(candidates), n=1, cutoff=0.8)
    return f"{reason}; did you mean {candidates[close[0]]}?" if close else reason


def _build_section(section: str, raw: Any, env: Mapping[str, str]) -> Any:
    cls, fields = _SCHEMA[section]
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid config: [{section}] must be a table.")
    for key in raw:
        if key not in fields:
            raise ConfigError(f"Unknown config key {section}.{key}.")
    values: dict[str, Any] = {}
    for key, validator in fields.items():
        if _env_name(section, key) in env:
            values[key] = _env_value(section, key, validator, env[_env_name(section, key)])
        elif key in raw:
            try:
                values[key] = validator(raw[key])
            except ValueError as exc:
                raise ConfigError(f"Invalid config: {section}.{key} {exc}.") from exc
    return cls(**values)


def _build_queues(raw: Any, support: SupportConfig) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError("Invalid config: [queues] must be a table of address = queue.")
    queues: dict[str, str] = {}
    for address, queue in raw.items():
        try:
            clean_address = _address(address)
            queues[clean_address] = _queue(queue)
        except ValueError as exc:
            raise ConfigError(f"Invalid config: queues.{address} {exc}.") from exc
    if support.address in queues:
        raise ConfigError(
            f"Invalid config: queues.{support.address} repeats support.address; "
            "set support.default_queue instead."
        )
    return queues


def imap_password_variable(name: str) -> str:
    """The environment variable holding an IMAP account's password."""
    return f"{_ENV_PREFIX}IMAP_{re.sub(r'[^A-Z0-9]', '_', name.upper())}_PASSWORD"


def _imap_values(where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid config: {where} must be a table.")
    for key in raw:
        if key not in _IMAP_FIELDS:
            raise ConfigError(f"Unknown config key {where}.{key}.")
    for key in _IMAP_REQUIRED:
        if key not in raw:
            raise ConfigError(f"Invalid config: {where}.{key} is required.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            values[key] = _IMAP_FIELDS[key](value)
        except ValueError as exc:
            raise ConfigError(f"Invalid config: {where}.{key} {exc}.") from exc
    return values


def _build_account(index: int, raw: Any, env: Mapping[str, str]) -> ImapAccount:
    where = f"imap[{index}]"
    values = _imap_values(where, raw)
    values.setdefault("port", 993 if values.get("tls", "ssl") == "ssl" else 143)
    variable = imap_password_variable(values["name"])
    if variable in env:
        # The environment is where secrets are meant to come from, so it wins over the file.
        values["password"], values["password_file"] = env[variable], ""
    if not values.get("address") and _ADDRESS_RE.match(values["username"].lower()):
        values["address"] = values["username"].lower()
    account = ImapAccount(**values)
    if account.after_action == "move" and account.after_folder == account.folder:
        raise ConfigError(f"Invalid config: {where}.after must name a folder other than folder.")
    return account


def _build_imap(raw: Any, env: Mapping[str, str]) -> tuple[ImapAccount, ...]:
    if not isinstance(raw, list):
        raise ConfigError("Invalid config: imap must be a list of [[imap]] tables.")
    accounts: list[ImapAccount] = []
    seen: dict[str, str] = {}
    for index, table in enumerate(raw):
        account = _build_account(index, table, env)
        # Names must differ in their environment variable too, or one password would serve two.
        key = imap_password_variable(account.name)
        if key in seen:
            raise ConfigError(
                f"Invalid config: imap[{index}].name repeats {seen[key]!r}; names must be unique."
            )
        seen[key] = account.name
        accounts.append(account)
    return tuple(accounts)


def build_config(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<memory>"
) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    env = os.environ if env is None else env
    _check_environment(env)
    for section in data:
        if section not in _SCHEMA and section not in ("queues", "imap"):
            raise ConfigError(f"Unknown config section [{section}].")
    sections = {name: _build_section(name, data.get(name, {}), env) for name in _SCHEMA}
    queues = _build_queues(data.get("queues", {}), sections["support"])
    imap = _build_imap(data.get("imap", []), env)
    return Config(queues=queues, imap=imap, source=source, **sections)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config named by ``path``, else by $MAILSUPPORT_CONFIG, else the defaults."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    if not chosen:
        return build_config({}, source="built-in defaults")
    file = Path(chosen)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file not found: {file}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read config file {file}: {exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {file} is not valid TOML: {exc}.") from exc
    return replace(build_config(data, source=str(file)), path=str(file.resolve()))
