"""The page frame every dashboard page shares (templates/base.html): the skip link, the nav with
its phone menu button, the theme toggle and the screen-reader announcer, all within the
Content-Security-Policy (no inline scripts or styles)."""

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _page(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_it_has_a_skip_link_to_the_main_content(client, user):
    html = _page(client, user, reverse("dashboard:keys"))
    assert re.search(r'<a class="skip-link" href="#main">Skip to main content</a>', html)
    assert '<main class="page" id="main" tabindex="-1">' in html
    # The skip link is the first thing a keyboard reaches.
    assert html.index("skip-link") < html.index('class="topbar"')


def test_the_menu_button_controls_the_nav(client, user):
    html = _page(client, user, reverse("dashboard:keys"))
    button = re.search(r"<button[^>]*data-menu-toggle[^>]*>", html).group(0)
    assert 'aria-expanded="false"' in button
    assert 'aria-controls="site-menu"' in button
    site_menu = html[html.index('id="site-menu"') :]
    assert site_menu.index('<nav class="nav"') < site_menu.index("Log out")


def test_the_theme_is_set_before_the_page_is_drawn(client, user):
    html = _page(client, user, reverse("dashboard:keys"))
    head = html[: html.index("</head>")]
    theme_script = re.search(r'<script src="[^"]*js/theme\.js"([^>]*)>', head)
    assert theme_script, "theme.js is loaded in <head>"
    assert "defer" not in theme_script.group(1) and "async" not in theme_script.group(1)
    assert head.index("theme.js") < head.index("app.css")
    assert re.search(r"<button[^>]*data-theme-toggle[^>]*aria-pressed=", html)


def test_it_has_no_inline_scripts_or_styles(client, staff):
    """The CSP allows only the site's own script and style files."""
    for url in (reverse("dashboard:keys"), reverse("fleet:tokens"), reverse("billing:billing")):
        html = _page(client, staff, url)
        for script in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
            attributes, _body = script
            assert "src=" in attributes or 'type="application/json"' in attributes, script
        assert " style=" not in html
        assert "<style" not in html


def test_copy_feedback_has_a_live_region(client, user):
    html = _page(client, user, reverse("dashboard:keys"))
    assert re.search(r'<div id="announcer"[^>]*role="status"[^>]*aria-live="polite"', html)


def test_staff_see_join_tokens_in_the_nav(client, staff):
    html = _page(client, staff, reverse("fleet:tokens"))
    nav = html[html.index('<nav class="nav"') : html.index("</nav>")]
    assert f'<a href="{reverse("fleet:tokens")}" aria-current="page">Join tokens</a>' in nav
    # Only the Join tokens link is current on its page, not Fleet as well.
    assert nav.count('aria-current="page"') == 1


def test_users_do_not_see_staff_links(client, user):
    html = _page(client, user, reverse("dashboard:keys"))
    nav = html[html.index('<nav class="nav"') : html.index("</nav>")]
    assert "Join tokens" not in nav
    assert "Deployments" not in nav


def test_a_logged_out_page_has_the_theme_toggle_but_no_menu(client):
    html = client.get(reverse("login")).content.decode()
    assert "data-theme-toggle" in html
    assert "data-menu-toggle" not in html
