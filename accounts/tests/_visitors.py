"""A test client from an address of its own: the pages that send email are throttled per IP, and
the throttle's counts live in Redis across tests."""

import secrets

from django.test import Client


def visitor() -> Client:
    return Client(REMOTE_ADDR=f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}")


def link_in(message) -> str:
    """The one http(s) link in an email's body."""
    import re

    links = re.findall(r"https?://\S+", message.body)
    assert len(links) == 1, message.body
    return links[0]


def path_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path
