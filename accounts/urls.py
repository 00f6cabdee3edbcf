from django.urls import path

from accounts import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("keys/", views.keys_list, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_csv, name="usage-csv"),
]
