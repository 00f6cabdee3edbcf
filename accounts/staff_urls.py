from django.urls import path

from accounts import staff_views as views

app_name = "users"

urlpatterns = [
    path("", views.users_list, name="list"),
    path("<int:user_id>/", views.user_edit, name="edit"),
    path("<int:user_id>/active/", views.user_set_active, name="set-active"),
    path("<int:user_id>/credits/", views.user_credit, name="credit"),
]
