"""The Usage page in a real browser, at desktop and phone widths: the charts are drawn (their
canvases hold pixels) from the page's figures, and the table they replace is folded away."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

import pytest

from inference.models import UsageRecord

pytestmark = pytest.mark.live

# The share of a canvas's pixels that are painted (not transparent).
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  return painted / (canvas.width * canvas.height);
}"""


@pytest.fixture
def usage(live):
    records = [
        UsageRecord.objects.create(
            request_id=f"req_{uuid.uuid4().hex}",
            user=live.user,
            endpoint="chat.completions",
            model=model,
            status_code=200,
            prompt_tokens=100 * (i + 1),
            completion_tokens=50,
            latency_ms=200 + i,
            cost=Decimal("0.00012000"),
        )
        for i, model in enumerate(["llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "llama-3.1-8b-instruct"])
    ]
    yield records
    UsageRecord.objects.filter(pk__in=[r.pk for r in records]).delete()


def test_the_usage_charts_are_drawn(logged_in_page, usage):
    page = logged_in_page

    page.goto("/usage/?days=1")

    page.wait_for_selector("#usage-charts:not([hidden])")
    for canvas in ("chart-requests", "chart-tokens", "chart-cost"):
        assert page.evaluate(PAINTED, canvas) > 0.01, canvas
    assert page.evaluate("document.getElementById('usage-table').open") is False
    box = page.locator("#chart-requests").bounding_box()
    assert box["width"] > 200 and box["height"] > 150
    assert box["x"] + box["width"] <= page.viewport_size["width"]  # the chart fits the screen
    directory = os.environ.get("GPUCLOUD_SCREENSHOTS")
    if directory:
        page.screenshot(path=os.path.join(directory, f"usage-{page.viewport_name}.png"), full_page=True)
