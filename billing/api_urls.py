from django.urls import path

from billing.api import BalanceView, LedgerView

urlpatterns = [
    path("balance", BalanceView.as_view(), name="api-balance"),
    path("ledger", LedgerView.as_view(), name="api-ledger"),
]
