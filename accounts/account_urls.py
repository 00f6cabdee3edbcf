"""Self-service account pages. Not namespaced: Django's auth views and their emails reverse
``password_reset_confirm`` and friends by these plain names."""

from django.urls import path

from accounts import account_views as views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("signup/done/", views.signup_done, name="signup-done"),
    path("signup/verify/<uidb64>/<token>/", views.verify_email, name="verify-email"),
    path("signup/resend/", views.verification_resend, name="verification-resend"),
    path("password-reset/", views.password_reset, name="password_reset"),
    path("password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    path("password-reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("password-reset/done/", views.password_reset_complete, name="password_reset_complete"),
    path("account/password/", views.password_change, name="password_change"),
    path("account/password/done/", views.password_change_done, name="password_change_done"),
]
