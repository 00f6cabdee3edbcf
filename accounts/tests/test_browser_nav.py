"""The page frame in a real browser: the phone menu, the skip link and the dark theme. One test
per width walks through all of them (each logged-in test costs a login through the form)."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.live

DARK_BG = "rgb(15, 18, 24)"  # --bg of the dark theme
LIGHT_BG = "rgb(245, 246, 248)"


def _background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_the_menu_skip_link_and_theme_toggle(logged_in_page):
    page = logged_in_page
    page.emulate_media(color_scheme="light")
    page.goto("/keys/")
    menu = page.get_by_role("button", name="Menu")
    usage = page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage")

    # The skip link: the first Tab shows it, Enter moves to the main content.
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).not_to_be_in_viewport()
    page.keyboard.press("Tab")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    page.wait_for_url("**#main")
    assert page.evaluate("document.activeElement.id") == "main"

    # The theme toggle: dark, remembered on the next page though the system prefers light, and back.
    toggle = page.get_by_role("button", name="Dark theme")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert _background(page) == LIGHT_BG
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert _background(page) == DARK_BG
    page.goto("/billing/")
    assert _background(page) == DARK_BG
    page.get_by_role("button", name="Dark theme").click()
    page.goto("/keys/")
    assert _background(page) == LIGHT_BG

    if page.viewport_name == "desktop":
        expect(menu).to_be_hidden()
        expect(usage).to_be_visible()
        return
    # The phone's bar is one row (the brand, the theme toggle and the menu button), nothing spilling out.
    expect(usage).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(usage).to_be_visible()
    expect(page.get_by_role("link", name="Join tokens")).to_be_visible()  # staff
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.keyboard.press("Escape")  # closes it
    expect(usage).to_be_hidden()
    menu.click()
    usage.click()
    page.wait_for_url("**/usage/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Usage")


def test_the_theme_follows_the_system_until_chosen(browser, live):
    context = browser.new_context(base_url=live.url, color_scheme="dark")
    try:
        page = context.new_page()
        # The theme is on <html> before the body is parsed: the page is never drawn light first.
        page.goto("/login/", wait_until="commit")
        page.wait_for_selector("body")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        page.wait_for_load_state()
        assert _background(page) == DARK_BG
        page.emulate_media(color_scheme="light")
        page.wait_for_function("document.documentElement.dataset.theme === 'light'")
        assert _background(page) == LIGHT_BG
    finally:
        context.close()


def test_without_scripts_the_phone_nav_is_open(browser, live):
    """No Menu button and no theme toggle (they would do nothing); the nav wraps inside the bar."""
    from conftest import VIEWPORTS, browser_login

    context = browser.new_context(base_url=live.url, viewport=VIEWPORTS["phone"], java_script_enabled=False)
    try:
        page = context.new_page()
        browser_login(page, live.user.username, "live user password")
        page.goto("/keys/")
        expect(page.get_by_role("button", name="Menu")).to_be_hidden()
        expect(page.get_by_role("button", name="Dark theme")).to_be_hidden()
        for name in ("API keys", "Usage", "Join tokens", "Admin"):
            expect(page.get_by_role("navigation", name="Main").get_by_role("link", name=name)).to_be_visible()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["phone"]["width"]
    finally:
        context.close()
