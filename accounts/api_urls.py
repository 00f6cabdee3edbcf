from django.urls import path

from accounts.api import KeyDetailView, KeysView

urlpatterns = [
    path("keys", KeysView.as_view(), name="api-keys"),
    path("keys/<int:key_id>", KeyDetailView.as_view(), name="api-key"),
]
