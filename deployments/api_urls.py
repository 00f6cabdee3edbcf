from django.urls import path

from deployments import api

urlpatterns = [
    path("workers/register", api.RegisterView.as_view(), name="api-workers-register"),
    path("workers", api.WorkersView.as_view(), name="api-workers"),
    path("queues", api.QueuesView.as_view(), name="api-queues"),
    path("deployments", api.DeploymentsView.as_view(), name="api-deployments"),
    path("deployments/<slug:name>", api.DeploymentDetailView.as_view(), name="api-deployment"),
]
