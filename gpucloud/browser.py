"""Helpers for the browser tests (Playwright on the live platform), shared by the apps' tests."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

#: The file backend's separator between messages written through one connection.
_SEPARATOR = "\n" + "-" * 79 + "\n"


def open_menu(page) -> None:
    """At phone widths the nav and the account controls are folded behind the Menu button."""
    button = page.locator("[data-menu-toggle]")
    if button.is_visible() and button.get_attribute("aria-expanded") != "true":
        button.click()


def within_width(page, locator) -> bool:
    """Whether the element lies within the viewport's width (it may be above or below the fold):
    at phone width a row's actions must not sit off to the right."""
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]


def live_emails(live, to: str) -> list[email.message.EmailMessage]:
    """The emails the live server sent to ``to`` (it writes them to files: EMAIL_FILE_PATH), oldest first."""
    found = []
    for path in sorted(Path(live.env["EMAIL_FILE_PATH"]).glob("*.log"), key=lambda p: p.stat().st_mtime):
        for chunk in path.read_text().split(_SEPARATOR):
            if chunk.strip():
                message = email.message_from_string(chunk.lstrip("\n"), policy=email.policy.default)
                if to.lower() in str(message["To"]).lower():
                    found.append(message)
    return found


def email_body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()
