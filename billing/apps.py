from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Signals so that every path covers them: a user created anywhere (signup, admin,
        # createsuperuser, the demo admin) gets the signup credit, and a catalog price saved
        # anywhere (dashboard, admin, services) starts a new price version. See billing.signals.
        from billing import signals  # noqa: F401
