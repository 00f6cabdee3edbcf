from django.urls import path

from inference.api import UsageView

urlpatterns = [
    path("usage", UsageView.as_view(), name="api-usage"),
]
