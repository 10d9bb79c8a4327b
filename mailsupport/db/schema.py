"""The schema revision this version of mailsupport writes, known without loading Alembic.

Loading Alembic and reading its scripts to learn it cost more than all the rest of a short
command, and the mail gateway runs once per message. tests/test_migrations.py checks it against
the migration scripts, so a new migration that does not move it fails there.
"""

from __future__ import annotations

HEAD = "0009"
# What Alembic records; a database at the head has exactly one row, HEAD.
REVISIONS_QUERY = "SELECT version_num FROM alembic_version"
