from django.urls import path

from marketplace import views

app_name = "marketplace"

urlpatterns = [
    path("", views.host_page, name="host"),
    path("tokens/", views.token_create, name="token-create"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("nodes/<int:node_id>/revoke/", views.node_revoke, name="node-revoke"),
    path("trusted-only/", views.trusted_only, name="trusted-only"),
    path("payouts/request/", views.payout_request, name="payout-request"),
    path("payouts/", views.payouts_staff, name="payouts"),
    path("payouts.csv", views.payouts_csv, name="payouts-csv"),
    path("payouts/<int:payout_id>/decide/", views.payout_decide, name="payout-decide"),
]
