"""Signing up in a real browser: the form, the verification email (the live server writes it to a
file, see the live platform's EMAIL_FILE_PATH), the link, logging in, and the starting credit."""

import re
import secrets

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from gpucloud.browser import email_body, live_emails, open_menu

pytestmark = pytest.mark.live

PASSWORD = "a long and unusual passphrase"


def _verification_link(live, address: str) -> str:
    from conftest import wait_for

    [message] = wait_for(lambda: live_emails(live, address), timeout=10, message=f"an email to {address}")
    assert message["Subject"] == "Verify your email address for GPU Cloud"
    [link] = re.findall(r"https?://\S+", email_body(message))
    return link


def test_a_visitor_signs_up_verifies_and_logs_in(browser_page, live):
    page = browser_page
    address = f"new-{page.viewport_name}-{secrets.token_hex(4)}@example.com"
    page.goto("/login/")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    # (That the account cannot log in before the link is followed: test_verify_email_view.)
    page.goto(_verification_link(live, address))
    page.get_by_role("button", name="Verify my email address").click()
    page.wait_for_url("**/login/")
    expect(page.locator(".message-success")).to_contain_text("Your email address is verified")

    page.get_by_label("Username").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/keys/")
    expect(page.locator(".who")).to_have_text(address)
    open_menu(page)
    page.get_by_role("link", name="Billing").click()
    expect(page.locator(".stat").filter(has_text="Balance")).to_contain_text("$5.00")
    # Not staff: no operator pages in the nav.
    open_menu(page)
    expect(page.get_by_role("link", name="Join tokens")).to_have_count(0)


def test_a_user_resets_a_forgotten_password(browser_page, live):
    page = browser_page
    if page.viewport_name == "phone":
        pytest.skip("the same pages as sign-up; once is enough for the time browser tests take")
    address = f"forgetful-{page.viewport_name}-{secrets.token_hex(4)}@example.com"
    get_user_model().objects.create_user(address, address, "the old passphrase")  # committed: the server sees it
    page.goto("/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill(address)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    from conftest import wait_for

    [message] = wait_for(lambda: live_emails(live, address), timeout=10, message="the reset email")
    [link] = re.findall(r"https?://\S+", email_body(message))
    page.goto(link)
    page.get_by_label("New password", exact=True).fill("a brand new passphrase")
    page.get_by_label("New password confirmation").fill("a brand new passphrase")
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", name="Your password is changed")).to_be_visible()

    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill(address)
    page.get_by_label("Password").fill("a brand new passphrase")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/keys/")
