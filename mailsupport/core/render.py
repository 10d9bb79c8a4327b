"""The text of the mail we send, rendered from Jinja2 templates per language.

Each mail is up to three files in ``<language>/``: ``<name>.subject.j2``, ``<name>.txt.j2`` and
an optional ``<name>.html.j2``. Every file is looked up on its own, first in the admin's override
directory, then in the shipped templates, so an admin can replace a single file. A template
that does not exist in the requested language is rendered in English: a missing translation
never stops a mail. The HTML part is taken only from the language the text was found in, since
most clients show the HTML alternative instead of the text and would hide a translation behind
English.

Variables every template receives:

``ticket``
    a mapping with ``number``, ``subject``, ``status``, ``priority`` and ``queue``
``support_name``, ``support_address``
    who the mail comes from, as configured (``support.name``, ``support.address``)
``tag``
    the subject tag, e.g. ``ACME``: the ticket is ``[{{ tag }} #{{ ticket.number }}]``
``contact_name``
    the customer's display name, possibly empty
``language``
    set by ``render`` to the language the template was found in

Status templates (``status_open``, ``status_waiting``, ``status_resolved``, ``status_closed``)
also receive ``old_status`` and ``new_status``; ``status_resolved`` uses ``auto_close_days``
when it is given. Nothing closes resolved tickets by itself yet, so nothing gives it, and the
shipped mail then promises only what happens: a reply reopens the request.

The shipped notices are plain text only, one line per paragraph: clients wrap lines to the
screen, where text wrapped at 72 columns breaks raggedly on a phone, and quoted-printable keeps
long lines within the limits of SMTP. They are a few sentences long with no formatting
worth having; every client renders plain text, while a second HTML copy of each notice in each
language is one more thing for translations to drift apart on. An admin who wants HTML adds
``<name>.html.j2`` to the override directory and gets a multipart/alternative mail.

Undefined variables are errors (``StrictUndefined``) rather than silent gaps; HTML templates
are autoescaped, text and subjects are not, and the subject is collapsed to one line. Override
templates are written by admins, not developers, so they run in Jinja's immutable sandbox and
cannot reach Python internals or change the values they are given.
"""

from __future__ import annotations

import re
import site
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailsupport.core.outmail import one_line
from mailsupport.errors import MailsupportError

FALLBACK_LANGUAGE = "en"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


class RenderError(MailsupportError):
    """A mail could not be rendered: no such template, or the template itself failed.

    The Jinja2 error (undefined variable, sandbox violation, syntax error...) is the cause.
    """


@dataclass(frozen=True)
class Rendered:
    subject: str  # one line, without the ticket tag (the caller adds "[ACME #12] ")
    text: str
    html: str | None


def default_template_dir() -> Path:
    """Where the shipped templates are: the source checkout, else the installed data files."""
    candidates = list(_template_dir_candidates())
    for candidate in candidates:
        if (candidate / FALLBACK_LANGUAGE).is_dir():
            return candidate
    places = ", ".join(str(c) for c in candidates)
    raise RenderError(f"The shipped mail templates are not installed (looked in {places}).")


def _template_dir_candidates() -> Iterator[Path]:
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():  # a source checkout or an editable install
        yield checkout / "templates"
    # `pip install .` puts the data files under the installation prefix: the venv or system
    # prefix, the scheme's data path (/usr/local on Debian), or the user base for --user.
    for base in dict.fromkeys((sys.prefix, sysconfig.get_path("data"), site.getuserbase())):
        yield Path(base) / "share" / "mailsupport" / "templates"


class Templates:
    """The shipped templates, optionally overridden file by file from an admin's directory."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self._roots = (*([override_dir] if override_dir else []), default_template_dir())
        self._environments: dict[str, ImmutableSandboxedEnvironment] = {}

    def languages(self) -> tuple[str, ...]:
        """Every language some template exists in, shipped or overridden."""
        found = {
            path.name
            for root in self._roots
            if root.is_dir()
            for path in root.iterdir()
            if path.is_dir() and _LANGUAGE.fullmatch(path.name)
        }
        return tuple(sorted(found))

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> Rendered:
        if not _NAME.fullmatch(name) or not _LANGUAGE.fullmatch(language):
            raise RenderError(f"Not a template name and language: {name!r}, {language!r}.")
        found = self._language_of(name, language)
        values = {**context, "language": found}
        subject = one_line(self._render(found, f"{name}.subject.j2", values))
        text = self._render(found, f"{name}.txt.j2", values).strip("\n") + "\n"
        html_file = f"{name}.html.j2"
        html = self._render(found, html_file, values) if self._has(found, html_file) else None
        return Rendered(subject=subject, text=text, html=html)

    def _language_of(self, name: str, language: str) -> str:
        for candidate in (language, FALLBACK_LANGUAGE):
            if self._has(candidate, f"{name}.txt.j2"):
                return candidate
        raise RenderError(f"No mail template named {name!r}.")

    def _has(self, language: str, file: str) -> bool:
        return any((root / language / file).is_file() for root in self._roots)

    def _render(self, language: str, file: str, values: Mapping[str, Any]) -> str:
        try:
            return self._environment(language).get_template(file).render(values)
        # What a template can raise: Jinja's own errors, and Python's from filters and
        # arithmetic on the values (an admin's "{{ 1 / 0 }}").
        except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise RenderError(f"Mail template {language}/{file} failed: {exc}") from exc

    def _environment(self, language: str) -> ImmutableSandboxedEnvironment:
        if language not in self._environments:
            languages = dict.fromkeys((language, FALLBACK_LANGUAGE))
            search = [root / lang for lang in languages for root in self._roots]
            self._environments[language] = ImmutableSandboxedEnvironment(
                loader=FileSystemLoader(search),
                undefined=StrictUndefined,
                autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
                trim_blocks=True,
                lstrip_blocks=True,
            )
        return self._environments[language]
