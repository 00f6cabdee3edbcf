"""Scaling a deployment from the Deployments page in a real browser (staff), at desktop and phone
widths: the row's replica field and Scale button are in view and do what they say."""

import pytest
from playwright.sync_api import expect

from gpucloud.browser import within_width

pytestmark = pytest.mark.live


def test_staff_scale_a_deployment(logged_in_page):
    from deployments.models import Deployment
    from deployments.services import deployment_update

    deployment = Deployment.objects.get(name="llama-3-1-8b-instruct")  # the demo catalog's
    page = logged_in_page
    try:
        page.goto("/fleet/deployments/")
        replicas = page.get_by_role("spinbutton", name=f"Replicas of {deployment.name}")
        assert within_width(page, replicas)
        replicas.fill("2")
        replicas.locator("xpath=..").get_by_role("button", name="Scale").click()
        expect(page.locator(".messages")).to_contain_text(f"Scaled “{deployment.name}” to 2 replicas")
        deployment.refresh_from_db()
        assert deployment.replicas == 2
        expect(page.get_by_role("spinbutton", name=f"Replicas of {deployment.name}")).to_have_value("2")

        page.get_by_role("spinbutton", name=f"Replicas of {deployment.name}").fill("1")
        page.get_by_role("spinbutton", name=f"Replicas of {deployment.name}").locator("xpath=..").get_by_role(
            "button", name="Scale"
        ).click()
        expect(page.locator(".messages")).to_contain_text(f"Scaled “{deployment.name}” to 1 replica.")
        deployment.refresh_from_db()
        assert deployment.replicas == 1
    finally:
        deployment.refresh_from_db()
        if deployment.replicas != 1:
            deployment_update(deployment=deployment, replicas=1)
