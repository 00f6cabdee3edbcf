"""Staff's Users page in a real browser: find a user, disable them, grant credits. (Users are made
with get_user_model(), not pytest-django's django_user_model, whose transaction the live server
would not see.)"""

import secrets
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from billing.selectors import balance_of
from gpucloud.browser import within_width

pytestmark = pytest.mark.live


def test_staff_find_disable_and_credit_a_user(logged_in_page):
    page = logged_in_page
    name = f"customer-{page.viewport_name}-{secrets.token_hex(3)}"
    customer = get_user_model().objects.create_user(name, f"{name}@example.com", "a customer passphrase")

    page.goto("/users/")
    page.get_by_role("searchbox", name="Search").fill(name)
    page.get_by_role("button", name="Search").click()
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_have_count(1)
    disable = row.get_by_role("button", name=f"Disable {name}")
    assert within_width(page, disable)  # the actions column stays in view at phone width
    disable.click()
    expect(page.locator(".message-success")).to_contain_text(f"Disabled {name}")
    customer.refresh_from_db()
    assert not customer.is_active

    page.get_by_role("link", name=f"Edit {name}").click()
    page.get_by_label("Amount (USD)").fill("7.5")
    page.get_by_label("Note").fill("browser test")
    page.get_by_role("button", name="Post to the ledger").click()
    expect(page.locator(".message-success")).to_contain_text("the balance is now $12.50")
    assert balance_of(customer) == Decimal("12.5")
