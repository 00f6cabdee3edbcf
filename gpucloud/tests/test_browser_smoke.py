"""The dashboard in a real browser, at desktop and phone widths: the login form lets a user in, a
wrong password keeps them out, and logging out ends the session."""

import pytest

pytestmark = pytest.mark.live


def test_a_user_logs_in_and_out(logged_in_page, live):
    page = logged_in_page

    assert page.locator(".who").inner_text() == live.user.username
    if page.viewport_name == "phone":  # the account controls are in the folded menu
        page.get_by_role("button", name="Menu").click()
    page.get_by_role("button", name="Log out").click()
    page.goto("/keys/")
    assert "/login/" in page.url


def test_a_wrong_password_keeps_the_user_out(browser_page, live):
    page = browser_page
    page.goto("/login/")
    page.fill("#id_username", live.user.username)
    page.fill("#id_password", "not the password")
    page.click("button[type=submit]")

    assert "/login/" in page.url
    assert page.locator(".who").count() == 0
