"""The Billing page: balance, spend, chart, key budgets, ledger paging, low-balance banner."""

import json
import re
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone

from billing import services

pytestmark = pytest.mark.django_db

URL = reverse("billing:billing")


def test_it_works(client, user, make_key):
    api_key, _ = make_key(user)
    services.request_charge(user=user, request_id="req_visible", cost=Decimal("0.5"), api_key=api_key)
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 200
    content = response.content.decode()
    assert "$4.50" in content
    assert "Spent this month" in content and "$0.50" in content
    assert "req_visible" in content
    assert api_key.display_prefix in content
    assert 'id="spend-chart"' in content and 'id="spend-data"' in content
    assert "Your balance is low" not in content
    assert "Grant credits" not in content


def test_it_requires_login(client, db):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_only_the_users_entries(client, user, outsider):
    services.request_charge(user=outsider, request_id="req_secret", cost=Decimal("1"))
    client.force_login(user)

    assert "req_secret" not in client.get(URL).content.decode()


def test_it_warns_of_a_low_balance(client, user):
    services.adjustment(user=user, amount=Decimal("-4.50"))
    client.force_login(user)

    response = client.get(URL)

    assert "Your balance is low ($0.50)" in response.content.decode()


def test_it_pages_the_ledger(client, user):
    for n in range(60):
        services.credit_grant(user=user, amount=Decimal("0.01"), note=f"grant-{n:02d}")
    client.force_login(user)

    first = client.get(URL).content.decode()
    second = client.get(URL, {"page": 2}).content.decode()

    assert "grant-59" in first and "grant-10" in first and "grant-09" not in first
    assert "grant-09" in second and "Signup credit" in second
    assert "Page 1 of 2" in first


def test_it_shows_key_budgets_and_the_soft_notice(client, user, make_key):
    api_key, _ = make_key(user, name="batch", max_budget=Decimal("1.00"), budget_soft_percent=50)
    services.request_charge(user=user, request_id="req_1", cost=Decimal("0.60"), api_key=api_key)
    client.force_login(user)

    content = client.get(URL).content.decode()

    assert "Key budgets" in content
    assert "60%" in content
    assert "has used 60% of its budget of $1.00 (per month (utc))" in content


def test_staff_see_the_grant_form(client, staff):
    client.force_login(staff)

    assert "Grant credits" in client.get(URL).content.decode()


def _spend_data(content: str) -> list[dict]:
    """The chart's figures, as the page hands them to static/js/billing.js."""
    match = re.search(r'<script id="spend-data" type="application/json">(.*?)</script>', content, re.S)
    assert match, "no spend-data json_script on the page"
    return json.loads(match.group(1))


def test_it_draws_the_chart_with_the_vendored_library(client, user):
    client.force_login(user)

    content = client.get(URL).content.decode()

    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', content)
    assert "/static/vendor/chartjs/chart.umd.js" in scripts
    assert "/static/js/billing.js" in scripts
    assert scripts.index("/static/vendor/chartjs/chart.umd.js") < scripts.index("/static/js/billing.js")
    assert all(src.startswith("/static/") for src in scripts)
    # The files are there to be served, with the library's licence beside it.
    assert finders.find("vendor/chartjs/chart.umd.js") and finders.find("js/billing.js")
    assert finders.find("vendor/chartjs/LICENSE.md")
    assert "Chart.js v4" in Path(finders.find("vendor/chartjs/chart.umd.js")).read_text()[:200]
    # The no-script fallback: the chart's box is hidden until the script shows it, the table is open.
    assert (
        '<div class="spend-chart" id="spend-chart" data-daily-chart="spend" data-label="Spent (USD)" hidden>' in content
    )
    assert '<details class="spend-table" id="spend-table" open>' in content
    assert "<svg" not in content


def test_no_template_loads_anything_from_another_origin():
    for template in (settings.BASE_DIR / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"https?://", text), template
        assert not re.search(r"""(src|href)=["']//""", text), template


def test_the_chart_data_holds_30_days_with_their_sums(client, user, outsider, make_key):
    api_key, _ = make_key(user)
    now = timezone.now().astimezone(UTC)
    today = now.date()
    charges = [
        ("req_today_1", "0.50", now),
        ("req_today_2", "0.00000001", now),
        ("req_3_days", "1.25", now - timedelta(days=3)),
        ("req_29_days", "0.10", now - timedelta(days=29)),  # the oldest day shown
        ("req_30_days", "7.00", now - timedelta(days=30)),  # too old for the chart
    ]
    for request_id, cost, at in charges:
        services.request_charge(user=user, request_id=request_id, cost=Decimal(cost), api_key=api_key, at=at)
    services.request_refund(request_id="req_3_days", amount=Decimal("0.25"))  # today, on the refund's day
    services.credit_grant(user=user, amount=Decimal("3.00"))  # money in is no spend
    services.request_charge(user=outsider, request_id="req_outsider", cost=Decimal("2"))
    client.force_login(user)

    content = client.get(URL).content.decode()
    days = _spend_data(content)

    assert [row["day"] for row in days] == [str(today - timedelta(days=n)) for n in range(29, -1, -1)]
    by_day = {row["day"]: Decimal(row["usd"]) for row in days}
    assert by_day[str(today)] == Decimal("0.25000001")  # 0.50 + 0.00000001 - the 0.25 refund
    assert by_day[str(today - timedelta(days=3))] == Decimal("1.25")
    assert by_day[str(today - timedelta(days=29))] == Decimal("0.10")
    assert sum(by_day.values()) == Decimal("1.60000001")
    assert sum(1 for amount in by_day.values() if amount) == 3
    assert 'Spent in the last 30 days</span><span class="stat-value">$1.60000001' in content
    # The same figures in the table that stands in for the chart without scripts.
    assert f'<time datetime="{today - timedelta(days=3)}">' in content and '<td class="num">1.25</td>' in content


def test_the_chart_data_is_all_zero_for_a_new_account(client, user):
    client.force_login(user)

    days = _spend_data(client.get(URL).content.decode())

    assert len(days) == 30
    assert {row["usd"] for row in days} == {"0.00"}
