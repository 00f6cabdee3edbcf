"""/docs/ in a real browser (Debian's Chromium): Swagger UI draws every operation from the vendored
files under the site's Content-Security-Policy, without one violation."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.live


@pytest.fixture
def page(browser):
    """A desktop tab of the session's Chromium (root conftest): Swagger UI is not laid out for phones."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_swagger_ui_draws_the_api_under_the_csp(live, page):
    messages, requests = [], []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("request", lambda request: requests.append(request.url))
    response = page.goto(f"{live.url}/docs/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = {element.inner_text().replace("\u200b", "") for element in page.query_selector_all(".opblock-summary-path")}
    assert {"/v1/chat/completions", "/v1/embeddings", "/api/usage", "/api/keys"} <= paths
    violations = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
    assert violations == []
    assert [url for url in requests if not url.startswith(live.url)] == []  # nothing from elsewhere (no CDN)
