"""Database, configuration and daemon fixtures (registered from conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import Config, build_config
from mailsupport.daemon import Daemon
from mailsupport.db.models import Base

from sink import Sink

PG_ENV = "MAILSUPPORT_TEST_PG_URL"
PG_SKIP = (
    f"PostgreSQL not configured: set {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1/test)"
)


def _reset_postgres(url: str) -> None:
    """Empty every table and restart the ticket counter, keeping the migrated schema."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            conn.execute(text("INSERT INTO counters (name, value) VALUES ('ticket', 0)"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite, and on PostgreSQL when it is configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailsupport.db'}"
    url: str = request.getfixturevalue("pg_url")
    open_app(build_config({"database": {"url": url}}, env={}), migrate=True).close()
    _reset_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mailsupport.db'}"


def config_data(db_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "support": {"name": "ACME Support", "address": "support@example.com", "tag": "ACME"},
        "database": {"url": db_url, "busy_timeout": 5.0},
        "smtp": {"host": "127.0.0.1", "port": 0},
        "pipeline": {"workers": 1, "poll_interval": 0.5},
        "queues": {"sales@example.com": "sales"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            rendered = str(value).lower() if isinstance(value, bool) else repr(value)
            if isinstance(value, str):
                rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f'"{key}" = {rendered}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def config(db_url: str) -> Config:
    return build_config(config_data(db_url), env={})


@pytest.fixture
def config_file(tmp_path: Path, config: Config) -> str:
    data = config_data(config.database.url)
    return str(write_config(tmp_path / "mailsupport.toml", data))


@pytest.fixture
def app(config: Config, clock: FrozenClock) -> Iterator[App]:
    application = open_app(config, clock=clock, migrate=True)
    yield application
    application.close()


@pytest.fixture
def relay() -> Iterator[Sink]:
    """A real SMTP server on loopback standing in for the outbound relay."""
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
def daemon(config: Config) -> Iterator[Daemon]:
    """The daemon with its real listener on a free loopback port; workers as threads."""
    running = Daemon(config, worker_processes=False)
    running.start()
    yield running
    running.stop()
