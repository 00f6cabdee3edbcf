"""Bearer credentials stored as a public prefix plus a keyed hash (API keys, join tokens, nodes).

A credential looks like ``<kind>_<prefix>_<secret>``. The 12-hex-digit prefix finds the row; the
whole credential is kept only as an HMAC-SHA256 under ``API_KEY_HASH_SECRET`` and compared in
constant time. The plaintext exists only in the return value of :func:`new_credential`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.conf import settings

PREFIX_RE = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class NewCredential:
    prefix: str
    hashed: str
    plaintext: str


def keyed_hash(plaintext: str) -> str:
    return hmac.new(settings.API_KEY_HASH_SECRET.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def new_credential(kind: str) -> NewCredential:
    prefix = secrets.token_hex(6)
    plaintext = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewCredential(prefix=prefix, hashed=keyed_hash(plaintext), plaintext=plaintext)


def split_credential(kind: str, plaintext: str) -> str | None:
    """The prefix of a credential of this kind, or None if it is not shaped like one."""
    if not plaintext.startswith(f"{kind}_"):
        return None
    prefix, _, secret = plaintext[len(kind) + 1 :].partition("_")
    # Only a well-formed prefix reaches the database (PostgreSQL refuses NUL bytes, for one).
    return prefix if PREFIX_RE.fullmatch(prefix) and secret else None


def matches(plaintext: str, hashed: str) -> bool:
    return hmac.compare_digest(hashed, keyed_hash(plaintext))
