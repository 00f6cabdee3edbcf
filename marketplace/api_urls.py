from django.urls import path

from marketplace import api

urlpatterns = [
    path("host/earnings", api.HostEarningsView.as_view(), name="api-host-earnings"),
]
