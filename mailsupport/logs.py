"""Logging set-up shared by the command line and the daemon's worker processes."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup_logging(level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    # mail-parser reports every MIME part type it does not render as a warning; on real mail
    # that is noise, and anything that matters is kept in ParsedMessage.defects instead.
    logging.getLogger("mailparser").setLevel(logging.ERROR)
    # APScheduler logs every run of every job at INFO: with the checkpoint job that is two
    # lines a second. Its warnings (a run missed) and errors (a job that raised) still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
