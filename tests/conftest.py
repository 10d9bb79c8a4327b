"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Database, configuration and daemon fixtures.
pytest_plugins = ["_fixtures"]

# Files in the corpus folders that are not mail.
_NOT_MAIL = frozenset({"LICENSE", "README.md"})


def corpus_mail_files(root: Path) -> list[Path]:
    """Every mail file under the corpus in a stable order; an mbox counts as one blob."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_MAIL)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared real-world corpus, from MAILSUPPORT_CORPUS or beside the repository."""
    configured = os.environ.get("MAILSUPPORT_CORPUS")
    repository = Path(__file__).resolve().parents[1]
    path = Path(configured) if configured else repository.parent / "shared" / "corpus"
    if not path.is_dir():
        pytest.skip("shared corpus not found: set MAILSUPPORT_CORPUS or put it at ../shared/corpus")
    return path


@pytest.fixture(scope="session")
def corpus_files(corpus_dir: Path) -> list[Path]:
    return corpus_mail_files(corpus_dir)
