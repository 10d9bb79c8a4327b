"""Subaddresses of ours: ``support+<something>@example.com`` carries data in the extension."""

from __future__ import annotations


def split_address(address: str) -> tuple[str, str]:
    """Local part and domain at the last "@"; empty strings when there is none."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return "", ""
    return local, domain


def extension(address: str, base: str) -> str | None:
    """What follows the base's local part in ``address`` (lower case), when both share a domain.

    Compared in lower case because mail servers may fold the case of a local part.
    """
    local, domain = split_address(address.strip().strip("<>"))
    base_local, base_domain = split_address(base)
    if not base_local or not domain or domain.lower() != base_domain.lower():
        return None
    folded = local.lower()
    prefix = base_local.lower()
    return folded[len(prefix) :] if folded.startswith(prefix) else None
