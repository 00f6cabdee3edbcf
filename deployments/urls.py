from django.urls import path

from deployments import views

app_name = "fleet"

urlpatterns = [
    path("", views.fleet_overview, name="fleet"),
    path("nodes/<int:node_id>/revoke/", views.node_revoke, name="node-revoke"),
    path("tokens/", views.tokens_list, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("deployments/", views.deployments_list, name="deployments"),
    path("deployments/<slug:name>/edit/", views.deployment_edit, name="deployment-edit"),
    path("deployments/<slug:name>/scale/", views.deployment_scale, name="deployment-scale"),
    path("deployments/<slug:name>/stop/", views.deployment_stop, name="deployment-stop"),
    path("deployments/<slug:name>/start/", views.deployment_start, name="deployment-start"),
    path("deployments/<slug:name>/delete/", views.deployment_delete, name="deployment-delete"),
    path("models/", views.models_list, name="models"),
    path("models/<int:model_id>/edit/", views.model_edit, name="model-edit"),
    path("models/<int:model_id>/delete/", views.model_delete, name="model-delete"),
]
