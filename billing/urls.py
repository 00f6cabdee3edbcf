from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("billing/", views.billing, name="billing"),
    path("billing/ledger.csv", views.ledger_csv, name="ledger-csv"),
    path("billing/usage.csv", views.usage_csv, name="usage-csv"),
    path("billing/grant/", views.credit_grant, name="grant"),
    path("pricing/", views.pricing, name="pricing"),
]
