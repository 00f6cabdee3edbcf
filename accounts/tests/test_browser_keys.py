"""Creating and copying an API key in a real browser, at desktop and phone widths."""

import httpx
import pytest
from playwright.sync_api import expect

from gpucloud.browser import within_width

pytestmark = pytest.mark.live


def test_a_user_creates_and_copies_a_key(logged_in_page, live):
    page = logged_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page.goto("/keys/")
    name = f"browser key {page.viewport_name}"
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-key-value")
    expect(secret).to_be_visible()
    key = secret.inner_text().strip()
    assert key.startswith("gpc_")
    copy = page.locator('[data-copy="#new-key-value"]')
    copy.click()
    expect(copy).to_have_text("Copied")
    # Said to screen readers too, not only shown on the button.
    expect(page.locator("#announcer")).to_have_text("Copied to the clipboard")
    assert page.evaluate("navigator.clipboard.readText()") == key
    # The button reads "Copy" again after a moment.
    expect(copy).to_have_text("Copy", timeout=5000)

    # The copied key works, and the list shows it.
    response = httpx.get(f"{live.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_have_count(1)
    # Its Revoke link is reachable without scrolling the page sideways, at phone width too.
    assert within_width(page, row.get_by_role("link", name="Revoke"))
