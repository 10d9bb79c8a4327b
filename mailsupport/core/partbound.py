"""Bound the number of MIME parts a mail's parser is given, in the raw bytes.

The email package builds a Message of several dicts and lists for each part: 200,000 parts of
a 9 MB mail took 19 times its size and 5 s. Real mail has at most a few hundred parts; past
MAX_PARTS delimiter lines the mail is handed to the parser cut short before the next one, as if
its last parts were missing. The stored message keeps every byte.
"""

from __future__ import annotations

import re

MAX_PARTS = 1000  # delimiter lines of the mail's declared boundaries

_BOUNDARY = re.compile(rb'boundary\s*=\s*"?([^";\r\n]+)', re.IGNORECASE)


def bound_parts(raw: bytes) -> tuple[bytes, str | None]:
    """``raw`` cut before its delimiter line past MAX_PARTS, and a note of the cut; else ``raw``.

    A count in C lets nearly every mail through: a delimiter line starts with "--".
    """
    if raw.count(b"\n--") <= MAX_PARTS:
        return raw, None
    boundaries = tuple({b"\n--" + found.strip() for found in _BOUNDARY.findall(raw)})
    if not boundaries:
        return raw, None
    seen = 0
    found = raw.find(b"\n--")
    while found >= 0:
        if raw.startswith(boundaries, found):
            seen += 1
            if seen > MAX_PARTS:
                note = f"more than {MAX_PARTS} MIME parts: the rest are only in the stored message"
                return raw[: found + 1], note
        found = raw.find(b"\n--", found + 3)
    return raw, None
