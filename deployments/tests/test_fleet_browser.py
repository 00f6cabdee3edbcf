"""The Fleet page in a real browser, at desktop and phone widths, on a live platform: the node's
GPU memory agrees with the replicas placed on it, its replicas are listed, and a request it served
shows in its throughput, live."""

from __future__ import annotations

import os

import pytest
from openai import OpenAI

from deployments.models import Replica

pytestmark = pytest.mark.live


def test_the_fleet_page_shows_placed_memory_replicas_and_throughput(logged_in_page, live, make_key):
    _, key = make_key(live.user, name="fleet page")
    client = OpenAI(base_url=f"{live.url}/v1", api_key=key)
    client.chat.completions.create(
        model="llama-3.1-8b-instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=20
    )
    node = live.wait_serving("main")
    replicas = list(Replica.objects.filter(node=node).select_related("deployment"))
    placed_gb = sum(r.memory_gb for r in replicas)
    page = logged_in_page

    page.goto("/fleet/")

    page.wait_for_selector("#fleet-live[data-state=live]")
    row = page.locator(f"tr[data-node-id='{node.pk}']")
    figures = row.locator(".gpu-figures").first.inner_text()
    assert figures.startswith(f"{placed_gb:g} / 80 GB"), figures
    names = row.locator(".replica-node").all_inner_texts()
    assert sorted(names) == sorted(r.deployment.name for r in replicas)
    assert float(row.locator("[data-rate=tokens]").inner_text()) > 0
    assert row.locator(".spark rect").count() == 15
    directory = os.environ.get("GPUCLOUD_SCREENSHOTS")
    if directory:
        page.screenshot(path=os.path.join(directory, f"fleet-{page.viewport_name}.png"), full_page=True)
