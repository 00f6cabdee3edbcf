"""The Fleet page in a real browser: the live rows (static/js/fleet.js) show each node's reliability
as the server's first render does."""

from __future__ import annotations

import pytest

from conftest import wait_for
from deployments import reliability
from deployments.models import WorkerNode

pytestmark = pytest.mark.live


def test_the_live_fleet_page_shows_reliability(logged_in_page, live):
    page = logged_in_page
    main = wait_for(lambda: live.node("main"), timeout=30, message="the shared node")
    # Strikes are an input of the score, so the platform's own periodic refresh agrees with this one.
    WorkerNode.objects.filter(pk=main.pk).update(verification_strikes=4)
    reliability.refresh()
    score = WorkerNode.objects.get(pk=main.pk).reliability
    assert score <= 0.2
    try:
        page.goto("/fleet/")
        page.wait_for_selector("#fleet-live[data-state=live]", timeout=15_000)
        row = page.locator(f'tr[data-node-id="{main.pk}"]')
        # Rendered by fleet.js from a live snapshot by now.
        page.wait_for_function(
            "id => document.querySelector(`tr[data-node-id='${id}'] [data-reliability]`)", arg=main.pk
        )
        cell = row.locator("[data-reliability]")
        assert cell.locator(".reliability-low").inner_text() == f"{round(score * 100)}%"
        assert "no new replicas" in cell.inner_text()
        assert cell.get_attribute("title").endswith("; 4 strikes")
    finally:
        WorkerNode.objects.filter(pk=main.pk).update(verification_strikes=0)
        reliability.refresh()
