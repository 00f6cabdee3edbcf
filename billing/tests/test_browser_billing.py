"""The Billing page's spend chart, drawn by the vendored Chart.js in a real browser, at desktop
and phone widths, from a real request's charge."""

import httpx
import pytest

pytestmark = pytest.mark.live

# Pixels of the bars' colour (--accent of the light theme, #4f46e5) on the chart's canvas.
COUNT_ACCENT_PIXELS = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let accent = 0, painted = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    painted++;
    if (Math.abs(data[i] - 79) < 8 && Math.abs(data[i + 1] - 70) < 8 && Math.abs(data[i + 2] - 229) < 8) accent++;
  }
  return {accent, painted};
}"""


def test_the_spend_chart_is_drawn(logged_in_page, live, make_key):
    from billing.models import LedgerEntry
    from conftest import wait_for

    _, key = make_key(live.user)
    charges = LedgerEntry.objects.filter(account=live.user, kind=LedgerEntry.Kind.CHARGE)
    before = charges.count()
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    wait_for(lambda: charges.count() > before, timeout=10, message="the request's charge")

    page = logged_in_page
    page.emulate_media(color_scheme="light")
    page.goto("/billing/")
    canvas = page.locator("#spend-chart canvas")
    canvas.wait_for(state="visible")
    page.wait_for_function("window.Chart && Chart.getChart(document.querySelector('#spend-chart canvas'))")
    today = page.evaluate("Chart.getChart(document.querySelector('#spend-chart canvas')).data.datasets[0].data.at(-1)")
    assert today > 0
    box = canvas.bounding_box()
    assert box["width"] > 200 and box["height"] > 100
    assert box["x"] + box["width"] <= page.viewport_size["width"]  # inside the page at phone width too
    pixels = canvas.evaluate(COUNT_ACCENT_PIXELS)
    assert pixels["accent"] > 20, pixels  # today's bar
    assert pixels["painted"] > pixels["accent"]  # and the axes
