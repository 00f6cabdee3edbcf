from django.urls import path

from deployments import views

app_name = "fleet"

urlpatterns = [
    path("", views.fleet_overview, name="fleet"),
    path("nodes/<int:node_id>/revoke/", views.node_revoke, name="node-revoke"),
    path("tokens/", views.tokens_list, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
